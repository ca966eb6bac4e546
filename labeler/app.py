"""The labeling app (FastHTML): one app object with its guard, the page, API and image
routers (pages.py, api.py) mounted on it, and the labeler's state in `app.state`.

Nothing is served from disk by a path from the request: images come by id from
the in-memory catalog, and there is no static-file route at all (our CSS and JS
are inlined), so the DuckDB file, CSVs and the journal can't be reached.
"""

from __future__ import annotations

from fasthtml.common import FastHTML, Link, Style

from .api import api, images
from .guard import SESSION_S, JsonGate, NoSniff, beforeware, session_key, sessions
from .pages import ASSETS, pages
from .settings import Settings
from .state import LabelerState
from .web import MAX_BODY

#: Inline, so the browser asks no route for it (and the tab is told apart from others).
FAVICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    "%3Crect width='16' height='16' rx='3' fill='%23111'/%3E"
    "%3Cpath d='M5 3a6 6 0 0 0 0 10' stroke='%23ddd' stroke-width='2' fill='none'/%3E"
    "%3Ccircle cx='9' cy='8' r='1.6' fill='%234aa3ff'/%3E%3C/svg%3E"
)


def create_app(settings: Settings, state: LabelerState | None = None) -> FastHTML:
    """The app for one data folder; `state` is made (and its threads started) if not given."""
    if state is None:
        state = LabelerState(settings)
        state.start()
    book = sessions(settings.home.labeler)
    app = FastHTML(
        before=beforeware(settings, book),
        default_hdrs=False,  # no CDN scripts: hospital networks are often offline
        secret_key=session_key(settings.home.labeler),
        session_cookie="mammo_labeler",
        same_site="strict",
        max_age=SESSION_S,  # a labeling session, not a year
        hdrs=(Style((ASSETS / "labeler.css").read_text()), Link(rel="icon", href=FAVICON)),
        title="mammo labeler",
        canonical=False,
        on_shutdown=[state.close],
    )
    app.state.labeler, app.state.sessions = state, book
    app.add_middleware(JsonGate, limit=MAX_BODY)
    app.add_middleware(NoSniff)  # added last: outermost, so the gate's answers get it too
    for router in (pages, api, images):
        router.to_app(app)
    return app
