"""A configured DICOMweb endpoint: its URL, credentials and TLS settings from the environment
(``MAMMO_DICOMWEB_*``), a client for it, and what to do when a request fails (retries
with backoff on transient errors; one-line messages that never carry credentials)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ENV_URL = "MAMMO_DICOMWEB_URL"
ENV_TOKEN = "MAMMO_DICOMWEB_TOKEN"
ENV_USER = "MAMMO_DICOMWEB_USER"
ENV_PASSWORD = "MAMMO_DICOMWEB_PASSWORD"
ENV_VERIFY = "MAMMO_DICOMWEB_VERIFY"  # "false" / "0" turns TLS verification off
ENV_CA_BUNDLE = "MAMMO_DICOMWEB_CA_BUNDLE"  # a PEM file of the site's CAs
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class PacsError(Exception):
    """A pull or push that cannot go on (configuration, credentials, server gone): one
    line for the user, never a credential or a patient identifier in it."""


@dataclass(frozen=True)
class PacsSource:
    """Where a DICOMweb service is and how to authenticate: none, basic (user and
    password) or a bearer token. TLS is verified unless `verify` is false, against
    `ca_bundle` when given."""

    url: str
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    verify: bool = True
    ca_bundle: str | None = None
    timeout: float = 60.0

    @classmethod
    def from_env(cls, url: str | None = None, environ: Mapping[str, str] = os.environ):
        """The source the environment configures (`url` overrides ``$MAMMO_DICOMWEB_URL``).
        Raises PacsError when there is no URL or the settings contradict each other."""
        url = url or environ.get(ENV_URL)
        if not url:
            raise PacsError(f"no DICOMweb source: set {ENV_URL} or pass --url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PacsError(f"{ENV_URL} must be an http(s) URL, got {redact(url)!r}")
        if parts.username or parts.password:
            raise PacsError(
                f"put credentials in {ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN}, not in the URL"
            )
        token, user = environ.get(ENV_TOKEN) or None, environ.get(ENV_USER) or None
        password = environ.get(ENV_PASSWORD) or None
        if token and user:
            raise PacsError(f"set either {ENV_TOKEN} or {ENV_USER}/{ENV_PASSWORD}, not both")
        if user and password is None:
            raise PacsError(f"{ENV_USER} is set but {ENV_PASSWORD} is not")
        verify = environ.get(ENV_VERIFY, "true").strip().lower() not in ("0", "false", "no")
        ca = environ.get(ENV_CA_BUNDLE) or None
        if ca and not Path(ca).is_file():
            raise PacsError(f"{ENV_CA_BUNDLE}: no such file {ca}")
        return cls(url.rstrip("/"), token, user, password, verify, ca)

    @property
    def auth(self) -> str:
        return "bearer" if self.token else "basic" if self.user else "none"

    def session(self):
        """A requests session with this source's auth and TLS settings."""
        import requests

        s = requests.Session()
        s.verify = self.ca_bundle or self.verify
        if self.token:
            s.headers["Authorization"] = f"Bearer {self.token}"
        elif self.user:
            s.auth = (self.user, self.password or "")
        return s

    def client(self):
        """A `dicomweb_client.DICOMwebClient`; its own retries are off (ours are explicit:
        `with_retries`). One per thread: a requests session is not thread-safe."""
        from dicomweb_client import DICOMwebClient

        c = DICOMwebClient(self.url, session=self.session(), timeout=(10, self.timeout))
        c.set_http_retry_params(retry=False)
        return c


def redact(url: str) -> str:
    """`url` without user info or query (what may appear in logs and tables)."""
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urlunsplit((p.scheme, host, p.path.rstrip("/"), "", ""))


# -- errors and retries ---------------------------------------------------------------


def http_status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def is_connection_error(e: BaseException) -> bool:
    import requests

    return isinstance(e, requests.ConnectionError | requests.Timeout)


def is_transient(e: BaseException) -> bool:
    """Worth another try: the server is unreachable or slow, or says so (408/429/5xx)."""
    return is_connection_error(e) or http_status(e) in RETRY_STATUS


@dataclass(frozen=True)
class Retry:
    """Exponential backoff: `attempts` tries, waiting `base_s`, 2×, 4×... (capped)."""

    attempts: int = 4
    base_s: float = 0.5
    cap_s: float = 8.0

    def waits(self) -> Iterable[float]:
        return (min(self.cap_s, self.base_s * 2**k) for k in range(self.attempts - 1))


def with_retries(call: Callable, retry: Retry, sleep: Callable[[float], None] = time.sleep):
    """`call()`, tried again after each transient failure (`is_transient`) until
    `retry.attempts` tries are spent; the last failure is raised."""
    for wait in retry.waits():
        try:
            return call()
        except Exception as e:
            if not is_transient(e):
                raise
            sleep(wait)
    return call()


def describe(e: BaseException, what: str, source: PacsSource) -> PacsError:
    """A one-line PacsError for a failure talking to `source` (no credentials)."""
    status = http_status(e)
    where = redact(source.url)
    if status in (401, 403):
        return PacsError(
            f"{where} refused the credentials (HTTP {status}, auth: {source.auth}) "
            f"while {what}: check {ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN}"
        )
    if status is not None:
        return PacsError(f"{where} answered HTTP {status} while {what}")
    if is_connection_error(e):
        return PacsError(f"cannot reach {where} while {what} ({type(e).__name__})")
    return PacsError(f"{where}: {what} failed: {type(e).__name__}: {e}")


# -- QIDO-RS ------------------------------------------------------------------------------
