"""The labeling app (FastHTML): pages, the JSON API and images by id.

Nothing is served from disk by a path from the request: images come by id from
the in-memory catalog, and there is no static-file route at all (our CSS and JS
are inlined), so the DuckDB file, CSVs and the journal can't be reached.
"""

from __future__ import annotations

import csv
import hmac
import io
import logging
import os
import secrets
from importlib.resources import files
from pathlib import Path

from fasthtml.common import (
    H1,
    A,
    Beforeware,
    Button,
    Div,
    FastHTML,
    Form,
    Input,
    Kbd,
    Label,
    Link,
    Main,
    P,
    RedirectResponse,
    Script,
    Span,
    Style,
    Title,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from mammo_dagster.core.labels import CSV_COLUMNS, KEYS, clean_annotator, label_row

from .state import CamUnavailable, LabelerState, NotFound, Settings

#: Inline, so the browser asks no route for it (and the tab is told apart from others).
FAVICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    "%3Crect width='16' height='16' rx='3' fill='%23111'/%3E"
    "%3Cpath d='M5 3a6 6 0 0 0 0 10' stroke='%23ddd' stroke-width='2' fill='none'/%3E"
    "%3Ccircle cx='9' cy='8' r='1.6' fill='%234aa3ff'/%3E%3C/svg%3E"
)

log = logging.getLogger("labeler")
ACTIONS = (
    ("1", "Biopsy tool"),
    ("2", "Mag view"),
    ("3", "Neither"),
    ("4", "Both"),
    ("s", "Skip"),
    ("u", "Undo"),
)
#: Review mode: confirm or correct the model; `g` shows where it looked.
REVIEW_ACTIONS = (
    ("y", "Model right"),
    ("n", "Model wrong…"),
    *ACTIONS[:4],
    ("g", "Grad-CAM"),
    ("s", "Skip"),
    ("u", "Undo"),
)
_ASSETS = files("labeler") / "assets"
PUBLIC = ("/login",)
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _session_key(folder: Path) -> str:
    """A per-installation secret for signing session cookies (mode 600, never served)."""
    path = folder / ".sesskey"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(settings: Settings, state: LabelerState | None = None) -> FastHTML:
    """The app for one data folder; `state` is made (and its threads started) if not given."""
    if state is None:
        state = LabelerState(settings)
        state.start()
    token = settings.token

    def cross_site(req: Request) -> str | None:
        """Other web sites must not drive a labeler in the browser next to them: on
        loopback only loopback host names (no DNS rebinding); a POST's Origin, when
        given, must be this server; API POSTs must be JSON (no simple-request forms)."""
        host = (req.headers.get("host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if settings.loopback and host not in LOOPBACK_NAMES:
            return f"unexpected Host {host!r}: open the labeler as http://127.0.0.1"
        if req.method == "POST":
            origin = req.headers.get("origin")
            if origin and origin.split("://", 1)[-1] != req.headers.get("host"):
                return "cross-site request refused"
            kind = req.headers.get("content-type", "")
            if req.url.path.startswith("/api/") and not kind.startswith("application/json"):
                return "the API takes application/json"
        return None

    def authorized(req: Request, sess: dict) -> bool:
        if not token:
            return True
        if sess.get("auth") == hmac.new(token.encode(), b"ok", "sha256").hexdigest():
            return True
        header = req.headers.get("authorization", "")
        return header.startswith("Bearer ") and hmac.compare_digest(header[7:], token)

    def before(req: Request, session):  # unannotated: FastHTML passes the session by name
        if problem := cross_site(req):
            return _error(403, problem)
        if authorized(req, session):
            return None
        if req.url.path.startswith("/api/") or req.method != "GET":
            return _error(401, "this labeler needs a token (Authorization: Bearer …)")
        return RedirectResponse("/login", status_code=303)

    app = FastHTML(
        before=Beforeware(before, skip=list(PUBLIC)),
        default_hdrs=False,  # no CDN scripts: hospital networks are often offline
        secret_key=_session_key(settings.home.labeler),
        session_cookie="mammo_labeler",
        same_site="strict",
        hdrs=(Style((_ASSETS / "labeler.css").read_text()), Link(rel="icon", href=FAVICON)),
        title="mammo labeler",
        canonical=False,
        on_shutdown=[state.close],
    )
    app.state.labeler = state
    script = (_ASSETS / "labeler.js").read_text()

    def annotator_of(req: Request, body: dict | None = None) -> str | None:
        name = (body or {}).get("annotator") or req.headers.get("x-annotator")
        name = name or req.session.get("annotator") or settings.annotator
        return clean_annotator(name) if name else None

    async def json_body(req: Request) -> dict:
        try:
            body = await req.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    # -- pages ---------------------------------------------------------------
    def page(req: Request, mode: str):
        try:
            who = annotator_of(req)
        except ValueError:
            who = None
        if not who:
            return Title("mammo labeler"), Main(
                Div(
                    H1("Who is labeling?"),
                    P("Your name is stored with every label you give."),
                    Form(
                        Label(
                            "Name",
                            Input(name="annotator", autofocus=True, required=True, maxlength="40"),
                        ),
                        Input(
                            type="hidden", name="next", value="/review" if mode == "review" else "/"
                        ),
                        Button("Start labeling"),
                        method="post",
                        action="/annotator",
                    ),
                    cls="card",
                )
            )
        review = mode == "review"
        stats = state.stats(who, review=review)
        other = A("label", href="/") if review else A("review the model", href="/review")
        return (
            Title("mammo review" if review else "mammo labeler"),
            Div(id="stage", data_id="", data_mode=mode),
            Div(
                Div(
                    Span("review" if review else "label", cls="mode"),
                    Span(f"{stats['labeled']} labeled", id="labeled"),
                    Span(
                        f"{stats['to_review']} to review"
                        if review
                        else f"{stats['remaining']} to go",
                        id="remaining",
                        cls="dim",
                    ),
                    Span("", id="retrain", cls="dim"),
                    id="progress",
                    cls="group",
                ),
                Div(Span("", id="facts"), Span("", id="pred"), cls="group"),
                Div(
                    *[
                        Button(Kbd(k), label, type="button", data_key=k)
                        for k, label in (REVIEW_ACTIONS if review else ACTIONS)
                    ],
                    id="actions",
                    cls="group",
                ),
                Div(Span("", id="warn"), cls="group"),
                Div(
                    other,
                    Span(who, cls="dim"),
                    Form(
                        Input(type="hidden", name="next", value="/review" if review else "/"),
                        Button("switch", type="submit"),
                        method="post",
                        action="/annotator/clear",
                    ),
                    id="who",
                    cls="group",
                ),
                id="bar",
            ),
            Script(script),
        )

    @app.get("/")
    def index(req: Request):
        return page(req, "label")

    @app.get("/review")
    def review_page(req: Request):
        return page(req, "review")

    @app.post("/annotator")
    def set_annotator(req: Request, annotator: str = "", next: str = "/"):
        try:
            req.session["annotator"] = clean_annotator(annotator)
        except ValueError as e:
            return Response(str(e), status_code=400)
        return RedirectResponse("/review" if next == "/review" else "/", status_code=303)

    @app.post("/annotator/clear")
    def clear_annotator(req: Request, next: str = "/"):
        req.session.pop("annotator", None)
        return RedirectResponse("/review" if next == "/review" else "/", status_code=303)

    @app.get("/login")
    def login_page(error: str = ""):
        return Title("mammo labeler: sign in"), Main(
            Div(
                H1("Sign in"),
                P("This labeler is shared on the network; it needs its token."),
                P("Wrong token.", cls="err") if error else "",
                Form(
                    Label("Token", Input(name="token", type="password", autofocus=True)),
                    Button("Sign in"),
                    method="post",
                    action="/login",
                ),
                cls="card",
            )
        )

    @app.post("/login")
    def login(req: Request, token: str = ""):
        given = token
        if settings.token and hmac.compare_digest(given.encode(), settings.token.encode()):
            req.session["auth"] = hmac.new(settings.token.encode(), b"ok", "sha256").hexdigest()
            return RedirectResponse("/", status_code=303)
        return RedirectResponse("/login?error=1", status_code=303)

    @app.get("/img")
    def image(id: str = ""):
        try:
            path = state.thumbnail(id)
        except NotFound:
            return Response("no such image", status_code=404)
        return FileResponse(
            path, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"}
        )

    @app.get("/cam")
    async def cam(id: str = "", flag: str = "", model: str = ""):
        try:
            path = await run_in_threadpool(state.cam, id, flag, model or None)
        except NotFound:
            return Response("no such image", status_code=404)
        except ValueError as e:
            return Response(str(e), status_code=400)
        except CamUnavailable as e:
            return Response(str(e), status_code=503)
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})

    # -- API -----------------------------------------------------------------
    async def with_annotator(req: Request):
        body = await json_body(req)
        try:
            who = annotator_of(req, body)
        except ValueError as e:
            return body, None, _error(400, str(e))
        if not who:
            return body, None, _error(400, "say who is labeling: annotator (JSON) or X-Annotator")
        return body, who, None

    @app.post("/api/next")
    async def api_next(req: Request):
        body, who, err = await with_annotator(req)
        if err:
            return err
        try:
            n = max(1, min(int(body.get("n", 1)), 50))
        except (TypeError, ValueError):
            return _error(400, "n must be a number")
        have = [str(i) for i in body.get("have", []) if isinstance(i, str)][:50]
        mode = body.get("mode", "label")
        if mode not in ("label", "review"):
            return _error(400, "mode must be label or review")
        items = await run_in_threadpool(state.next_items, who, n, have, mode)
        return JSONResponse({"items": items, "stats": state.stats(who, review=mode == "review")})

    @app.post("/api/label")
    async def api_label(req: Request):
        body, who, err = await with_annotator(req)
        if err:
            return err
        key = body.get("key")
        if key is None and "has_biopsy_tool" in body and "has_mag_view" in body:
            flags = (bool(body["has_biopsy_tool"]), bool(body["has_mag_view"]))
            key = {v: k for k, v in KEYS.items()}[flags]
        event_id = body.get("event_id")
        if event_id is not None and (not isinstance(event_id, str) or not 8 <= len(event_id) <= 64):
            return _error(400, "event_id must be a string of 8-64 characters")
        model_version = body.get("model_version")
        try:
            event = await run_in_threadpool(
                state.label,
                who,
                str(body.get("id", "")),
                str(key),
                event_id=event_id,
                model_version=str(model_version) if model_version else None,
                source="review" if body.get("mode") == "review" else None,
            )
        except NotFound:
            return _error(404, "no such image")
        except ValueError as e:
            return _error(400, str(e))
        except OSError as e:
            log.error("journal write failed: %s", e)
            return _error(503, "could not record the label; retry")
        review = body.get("mode") == "review"
        return JSONResponse(
            {"ok": True, "event_id": event.event_id, "stats": state.stats(who, review=review)}
        )

    @app.post("/api/undo")
    async def api_undo(req: Request):
        body, who, err = await with_annotator(req)
        if err:
            return err
        event_id, retracts = body.get("event_id"), body.get("retracts")
        for name, value in (("event_id", event_id), ("retracts", retracts)):
            if value is not None and (not isinstance(value, str) or not 8 <= len(value) <= 64):
                return _error(400, f"{name} must be a string of 8-64 characters")
        try:
            item = await run_in_threadpool(state.undo, who, event_id=event_id, retracts=retracts)
        except ValueError as e:
            return _error(400, str(e))
        except OSError as e:
            log.error("journal write failed: %s", e)
            return _error(503, "could not record the undo; retry")
        review = body.get("mode") == "review"
        return JSONResponse({"ok": True, "item": item, "stats": state.stats(who, review=review)})

    @app.post("/api/renew")
    async def api_renew(req: Request):
        """The page says which images it holds (leases renewed); answers the stats."""
        body, who, err = await with_annotator(req)
        if err:
            return err
        have = [str(i) for i in body.get("have", []) if isinstance(i, str)][:50]
        state.renew(who, have)
        return JSONResponse(state.stats(who, review=body.get("mode") == "review"))

    @app.get("/api/stats")
    def api_stats(req: Request, mode: str = "label"):
        try:
            who = annotator_of(req)
        except ValueError as e:
            return _error(400, str(e))
        return JSONResponse(state.stats(who, review=mode == "review"))

    @app.get("/api/labels.csv")
    def api_export():
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        rows = sorted(state.current_events(), key=lambda e: (e.sop_instance_uid, e.frame))
        # `source` would tell annotators which images are hold-out: left blank here
        # (`mammo labels export` has it).
        writer.writerows(label_row(e) | {"source": ""} for e in rows)
        return Response(
            buf.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="labels.csv"'},
        )

    return app
