"""The pages a person sees: label and review (one keyboard-driven page each), who is
labeling, and signing in; built from small component functions."""

from __future__ import annotations

import hmac
from importlib.resources import files

from fasthtml.common import (
    H1,
    A,
    APIRouter,
    Button,
    Div,
    Form,
    Input,
    Kbd,
    Label,
    Main,
    P,
    RedirectResponse,
    Script,
    Span,
    Title,
)
from starlette.requests import Request
from starlette.responses import Response

from mammo_dagster.core.store.labels import clean_annotator

from .guard import LOGIN_WINDOW_S, attempts_left, cross_site, signed_in, wrong_token
from .web import annotator_of, state_of

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
ASSETS = files("labeler") / "assets"
#: The one document-level key listener (inlined: there is no static-file route).
SCRIPT = (ASSETS / "labeler.js").read_text()

pages = APIRouter()


def _back(mode: str) -> str:
    return "/review" if mode == "review" else "/"


def who_form(mode: str):
    """Asks for the annotator's name (stored with every label)."""
    return Title("mammo labeler"), Main(
        Div(
            H1("Who is labeling?"),
            P("Your name is stored with every label you give."),
            Form(
                Label(
                    "Name",
                    Input(name="annotator", autofocus=True, required=True, maxlength="40"),
                ),
                Input(type="hidden", name="next", value=_back(mode)),
                Button("Start labeling"),
                method="post",
                action="/annotator",
            ),
            cls="card",
        )
    )


def progress_group(stats: dict, review: bool):
    return Div(
        Span("review" if review else "label", cls="mode"),
        Span(f"{stats['labeled']} labeled", id="labeled"),
        Span(
            f"{stats['to_review']} to review" if review else f"{stats['remaining']} to go",
            id="remaining",
            cls="dim",
        ),
        Span("", id="retrain", cls="dim"),
        id="progress",
        cls="group",
    )


def action_buttons(review: bool):
    return Div(
        *[
            Button(Kbd(k), label, type="button", data_key=k)
            for k, label in (REVIEW_ACTIONS if review else ACTIONS)
        ],
        id="actions",
        cls="group",
    )


def who_group(who: str, review: bool, can_sign_out: bool = False):
    """The other mode's link, the annotator, a button to switch annotator and, behind a
    token, one to sign out."""
    other = A("label", href="/") if review else A("review the model", href="/review")
    sign_out = Form(Button("sign out", type="submit"), method="post", action="/logout")
    return Div(
        other,
        Span(who, cls="dim"),
        Form(
            Input(type="hidden", name="next", value="/review" if review else "/"),
            Button("switch", type="submit"),
            method="post",
            action="/annotator/clear",
        ),
        *([sign_out] if can_sign_out else []),
        id="who",
        cls="group",
    )


def labeling_page(req: Request, mode: str):
    """The label (or review) page: the image stage and the bar; labeler.js fills them."""
    try:
        who = annotator_of(req)
    except ValueError:
        who = None
    if not who:
        return who_form(mode)
    review = mode == "review"
    stats = state_of(req).stats(who, review=review)
    return (
        Title("mammo review" if review else "mammo labeler"),
        Div(id="stage", data_id="", data_mode=mode),
        Div(  # three rows of fixed height (labeler.css): the image never moves
            progress_group(stats, review),
            Div(Span("", id="facts"), cls="group", id="about"),
            who_group(who, review, bool(req.session.get("sid"))),
            Div(Span("", id="pred"), cls="group", id="says"),
            action_buttons(review),
            Div(Span("", id="warn"), cls="group", id="status"),
            id="bar",
        ),
        Script(SCRIPT),
    )


def login_card(wrong: bool):
    return Title("mammo labeler: sign in"), Main(
        Div(
            H1("Sign in"),
            P("This labeler is shared on the network; it needs its token."),
            P("Wrong token.", cls="err") if wrong else "",
            Form(
                Label("Token", Input(name="token", type="password", autofocus=True)),
                Button("Sign in"),
                method="post",
                action="/login",
            ),
            cls="card",
        )
    )


@pages.get("/")
def index(req: Request):
    return labeling_page(req, "label")


@pages.get("/review")
def review_page(req: Request):
    return labeling_page(req, "review")


@pages.post("/annotator")
def set_annotator(req: Request, annotator: str = "", next: str = "/"):
    try:
        req.session["annotator"] = clean_annotator(annotator)
    except ValueError as e:
        return Response(str(e), status_code=400)
    req.app.state.sessions.name(req.session.get("sid"), req.session["annotator"])
    return RedirectResponse("/review" if next == "/review" else "/", status_code=303)


@pages.post("/annotator/clear")
def clear_annotator(req: Request, next: str = "/"):
    req.session.pop("annotator", None)
    return RedirectResponse("/review" if next == "/review" else "/", status_code=303)


@pages.post("/logout")
def logout(req: Request):
    """Sign out: this session leaves the book (its cookie is worthless from now on)."""
    sid = req.session.get("sid")
    if isinstance(sid, str) and len(sid) > 8:
        req.app.state.sessions.revoke(sid)
    req.session.clear()
    return RedirectResponse("/login", status_code=303)


@pages.get("/login")
def login_page(error: str = ""):
    return login_card(bool(error))


@pages.post("/login")
def login(req: Request, token: str = ""):
    settings = state_of(req).settings
    if problem := cross_site(req, settings.loopback):  # the same rules as every POST
        return Response(problem, status_code=403, media_type="text/plain")
    who = req.client.host if req.client else "?"
    if not attempts_left(req.app.state, who):
        return Response(
            f"too many wrong tokens: try again in {LOGIN_WINDOW_S // 60} minutes",
            status_code=429,
            media_type="text/plain",
        )
    expected = settings.token
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        req.session["auth"] = signed_in(expected)
        req.session["sid"] = req.app.state.sessions.open(req.session.get("annotator"))
        return RedirectResponse("/", status_code=303)
    wrong_token(req.app.state, who)
    return RedirectResponse("/login?error=1", status_code=303)
