"""Who may use the labeler: loopback host names only (no DNS rebinding), same-origin
POSTs, JSON for the API, and a token when it is shared on the network."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fasthtml.common import Beforeware, RedirectResponse
from starlette.requests import Request

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


def authorized(req: Request, session: dict, token: str | None) -> bool:
    if not token:
        return True
    if session.get("auth") == signed_in(token):
        return True
    header = req.headers.get("authorization", "")
    return header.startswith("Bearer ") and hmac.compare_digest(header[7:], token)


def beforeware(settings: Settings) -> Beforeware:
    """Runs before every route but the login page."""

    def before(req: Request, session):  # unannotated: FastHTML passes the session by name
        if problem := cross_site(req, settings.loopback):
            return error(403, problem)
        if authorized(req, session, settings.token):
            return None
        if req.url.path.startswith("/api/") or req.method != "GET":
            return error(401, "this labeler needs a token (Authorization: Bearer …)")
        return RedirectResponse("/login", status_code=303)

    return Beforeware(before, skip=list(PUBLIC))
