"""What every route needs from a request: the labeler's state, who is labeling, the
JSON body (bounded, and checked field by field: strict types, bounded strings and
counts; a bad one is a 400 with a one-line reason, never a 500), and errors as JSON."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse

from mammo_dagster.core.store.labels import clean_annotator

from .state import LabelerState


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def state_of(req: Request) -> LabelerState:
    return req.app.state.labeler


#: The largest JSON body the API reads (a label is ~200 bytes; `have` 50 ids ~4 KB).
MAX_BODY = 64 * 1024
#: Image ids, event ids and model versions are far shorter than this.
MAX_TEXT = 128


class BadBody(ValueError):
    """A request body the API refuses: its status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(reason)


def annotator_of(req: Request, body: dict | None = None) -> str | None:
    """The body's annotator, else the X-Annotator header, else the session's, else the
    labeler's default; ValueError for a name that is not allowed."""
    name = (body or {}).get("annotator") or req.headers.get("x-annotator")
    if name is not None and not isinstance(name, str):
        raise ValueError("annotator must be a string")
    name = name or req.session.get("annotator") or state_of(req).settings.annotator
    return clean_annotator(name) if name else None


async def json_body(req: Request) -> dict:
    """The JSON object the request carries ({} for an empty body); BadBody (413) past
    MAX_BODY bytes, read no further; BadBody (400) for anything but a JSON object."""
    declared = req.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise BadBody(413, f"the body is over {MAX_BODY // 1024} KB")
    raw = bytearray()
    async for chunk in req.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise BadBody(413, f"the body is over {MAX_BODY // 1024} KB")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: [[[[... nested past Python's stack
        raise BadBody(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadBody(400, "the body must be a JSON object")
    return body


async def with_annotator(req: Request) -> tuple[dict, str | None, JSONResponse | None]:
    """(JSON body, annotator, None) or (body, None, the error to answer)."""
    try:
        body = await json_body(req)
    except BadBody as e:
        return {}, None, error(e.status, str(e))
    try:
        who = annotator_of(req, body)
    except ValueError as e:
        return body, None, error(400, str(e))
    if not who:
        return body, None, error(400, "say who is labeling: annotator (JSON) or X-Annotator")
    return body, who, None


def held_ids(body: dict) -> list[str]:
    """The image ids a page says it holds (at most 50); ValueError unless a list of ids."""
    have = body.get("have")
    if have is None:
        return []
    if not isinstance(have, list) or not all(isinstance(i, str) for i in have):
        raise ValueError("have must be a list of image ids (strings)")
    return [i for i in have if len(i) <= MAX_TEXT][:50]


def whole(body: dict, name: str, default: int, lo: int, hi: int) -> int:
    """A whole-number field, clamped to [lo, hi]; ValueError for any other type (a bool,
    a float such as 1e400, a string)."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number")
    return max(lo, min(value, hi))


def text(body: dict, name: str, *, limit: int = MAX_TEXT) -> str | None:
    """An optional string field of at most `limit` characters (None when absent/null)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{name} must be a string of at most {limit} characters")
    return value


def boolean(body: dict, name: str) -> bool:
    """A strict JSON boolean: "false", "no", 0 and null are refused, not taken as true."""
    value = body.get(name)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false (a JSON boolean)")
    return value


def choice(body: dict, name: str, options: tuple[str, ...]) -> str:
    """A field that must be one of `options` (the first when absent)."""
    value = body.get(name, options[0])
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be {' or '.join(options)}")
    return value
