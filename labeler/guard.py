"""Who may use the labeler: loopback host names only (no DNS rebinding), same-origin
POSTs, JSON for the API, and a token when it is shared on the network."""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from fasthtml.common import Beforeware, RedirectResponse
from starlette.requests import Request

from .sessions import SessionBook
from .settings import Settings
from .web import error

PUBLIC = ("/login",)
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def session_key(folder: Path) -> str:
    """A per-installation secret for signing session cookies (mode 600, never served)."""
    path = folder / ".sesskey"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


#: Wrong tokens one client may try per window before /login answers 429.
LOGIN_ATTEMPTS, LOGIN_WINDOW_S = 10, 600
#: How long a signed-in session lasts (the cookie and the server-side signature check).
SESSION_S = 12 * 3600


def _failures(app_state) -> tuple[threading.Lock, dict[str, deque]]:
    if not hasattr(app_state, "login_failures"):
        app_state.login_failures = (threading.Lock(), {})
    return app_state.login_failures


def attempts_left(app_state, client: str) -> bool:
    """Whether `client` may try a token now (fewer than LOGIN_ATTEMPTS wrong ones in the
    last LOGIN_WINDOW_S seconds); state per app, not per module."""
    lock, failures = _failures(app_state)
    with lock:
        recent = failures.get(client)
        if recent is None:
            return True
        while recent and recent[0] < time.monotonic() - LOGIN_WINDOW_S:
            recent.popleft()
        return len(recent) < LOGIN_ATTEMPTS


def wrong_token(app_state, client: str) -> None:
    lock, failures = _failures(app_state)
    with lock:
        failures.setdefault(client, deque(maxlen=LOGIN_ATTEMPTS)).append(time.monotonic())


def signed_in(token: str) -> str:
    """What a session holds once signed in with `token`."""
    return hmac.new(token.encode(), b"ok", "sha256").hexdigest()


def cross_site(req: Request, loopback: bool) -> str | None:
    """Other web sites must not drive a labeler in the browser next to them: on
    loopback only loopback host names (no DNS rebinding); a POST's Origin, when
    given, must be this server; API POSTs must be JSON (no simple-request forms)."""
    host = (req.headers.get("host") or "").rsplit(":", 1)[0].strip("[]").lower()
    if loopback and host not in LOOPBACK_NAMES:
        return f"unexpected Host {host!r}: open the labeler as http://127.0.0.1"
    if req.method == "POST":
        origin = req.headers.get("origin")
        if origin and origin.split("://", 1)[-1] != req.headers.get("host"):
            return "cross-site request refused"
        kind = req.headers.get("content-type", "")
        if req.url.path.startswith("/api/") and not kind.startswith("application/json"):
            return "the API takes application/json"
    return None


def sessions(folder: Path) -> SessionBook:
    """The signed-in sessions of the labeler whose folder is `folder`."""
    return SessionBook(folder, SESSION_S)


def authorized(
    req: Request, session: dict, token: str | None, book: SessionBook | None = None
) -> bool:
    """No token: everyone on loopback. Else a signed-in session that is still in the
    book (not revoked, not signed out, not expired), or the token as a Bearer header."""
    if not token:
        return True
    if session.get("auth") == signed_in(token) and (book is None or book.valid(session.get("sid"))):
        return True
    header = req.headers.get("authorization", "")
    given = header[7:].encode("utf-8", "replace")  # bytes: a non-ASCII token is just wrong
    return header.startswith("Bearer ") and hmac.compare_digest(given, token.encode())


class NoSniff:
    """ASGI middleware: every answer says ``X-Content-Type-Options: nosniff``, so no
    browser runs a text answer as a page."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_nosniff(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                message["headers"] = [*headers, (b"x-content-type-options", b"nosniff")]
            await send(message)

        await self.app(scope, receive, send_nosniff)


def beforeware(settings: Settings, book: SessionBook) -> Beforeware:
    """Runs before every route but the login page."""

    def before(req: Request, session):  # unannotated: FastHTML passes the session by name
        if problem := cross_site(req, settings.loopback):
            return error(403, problem)
        if authorized(req, session, settings.token, book):
            return None
        if req.url.path.startswith("/api/") or req.method != "GET":
            return error(401, "this labeler needs a token (Authorization: Bearer …)")
        return RedirectResponse("/login", status_code=303)

    return Beforeware(before, skip=list(PUBLIC))


class JsonGate:
    """ASGI middleware in front of everything (FastHTML parses bodies before our routes
    see them): a body over `limit` bytes is a 413 before it is read whole, and a JSON
    body that doesn't parse (or nests past Python's stack) or isn't an object a 400; all
    one-line JSON."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await _json_error(send, 413, f"the body is over {self.limit // 1024} KB")
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await _json_error(send, 413, f"the body is over {self.limit // 1024} KB")
        kind = headers.get(b"content-type", b"").split(b";")[0].strip()
        if kind == b"application/json" and body.strip():
            try:
                parsed = json.loads(body)
            except (ValueError, RecursionError):
                return await _json_error(send, 400, "the body is not JSON")
            if not isinstance(parsed, dict):
                return await _json_error(send, 400, "the body must be a JSON object")
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _json_error(send, status: int, message: str) -> None:
    payload = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
