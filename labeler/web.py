"""What every route needs from a request: the labeler's state, who is labeling, the
JSON body, and errors as JSON."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from mammo_dagster.core.labels import clean_annotator

from .state import LabelerState


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def state_of(req: Request) -> LabelerState:
    return req.app.state.labeler


def annotator_of(req: Request, body: dict | None = None) -> str | None:
    """The body's annotator, else the X-Annotator header, else the session's, else the
    labeler's default; ValueError for a name that is not allowed."""
    name = (body or {}).get("annotator") or req.headers.get("x-annotator")
    name = name or req.session.get("annotator") or state_of(req).settings.annotator
    return clean_annotator(name) if name else None


async def json_body(req: Request) -> dict:
    try:
        body = await req.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def with_annotator(req: Request) -> tuple[dict, str | None, JSONResponse | None]:
    """(JSON body, annotator, None) or (body, None, the error to answer)."""
    body = await json_body(req)
    try:
        who = annotator_of(req, body)
    except ValueError as e:
        return body, None, error(400, str(e))
    if not who:
        return body, None, error(400, "say who is labeling: annotator (JSON) or X-Annotator")
    return body, who, None


def held_ids(body: dict) -> list[str]:
    """The image ids a page says it holds (at most 50)."""
    return [str(i) for i in body.get("have", []) if isinstance(i, str)][:50]
