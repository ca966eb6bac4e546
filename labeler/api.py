"""The JSON API the page (and the simulated labeler) drive, the labels as CSV, and
images by id: thumbnails and Grad-CAM overlays, never a path from the request."""

from __future__ import annotations

import csv
import io
import logging

from fasthtml.common import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from mammo_dagster.core.imaging.thumbnails import viewing_png
from mammo_dagster.core.store.labels import CSV_COLUMNS, KEYS, csv_safe, label_row

from .cams import CamUnavailable
from .state import NotFound
from .web import (
    annotator_of,
    boolean,
    choice,
    error,
    held_ids,
    state_of,
    text,
    whole,
    with_annotator,
)

log = logging.getLogger("labeler")
MODES = ("label", "review")
#: Model versions are short names (m0007); a long one would bloat every export.
MAX_MODEL_VERSION = 64
api = APIRouter(prefix="/api")
images = APIRouter()


def _recorded(state, who: str, body: dict, **answer) -> JSONResponse:
    """A label or undo stored: `answer` and the bar's numbers for the page's mode."""
    review = body.get("mode") == "review"
    return JSONResponse({"ok": True, **answer, "stats": state.stats(who, review=review)})


def _journal_failed(e: OSError, what: str) -> JSONResponse:
    log.error("journal write failed: %s", e)
    return error(503, f"could not record the {what}; retry")


def _event_id_error(name: str, value: object) -> JSONResponse | None:
    if value is not None and (not isinstance(value, str) or not 8 <= len(value) <= 64):
        return error(400, f"{name} must be a string of 8-64 characters")
    return None


@api.post("/next")
async def api_next(req: Request):
    body, who, err = await with_annotator(req)
    if err:
        return err
    try:
        n = whole(body, "n", 1, 1, 50)
        mode = choice(body, "mode", MODES)
        have = held_ids(body)
    except ValueError as e:
        return error(400, str(e))
    state = state_of(req)
    items = await run_in_threadpool(state.next_items, who, n, have, mode)
    return JSONResponse({"items": items, "stats": state.stats(who, review=mode == "review")})


@api.post("/label")
async def api_label(req: Request):
    body, who, err = await with_annotator(req)
    if err:
        return err
    try:
        key = text(body, "key", limit=8)
        if key is None and "has_biopsy_tool" in body and "has_mag_view" in body:
            flags = (boolean(body, "has_biopsy_tool"), boolean(body, "has_mag_view"))
            key = {v: k for k, v in KEYS.items()}[flags]
        image_id = text(body, "id") or ""
        model_version = text(body, "model_version", limit=MAX_MODEL_VERSION)
        mode = choice(body, "mode", MODES)
    except ValueError as e:
        return error(400, str(e))
    event_id = body.get("event_id")
    if bad := _event_id_error("event_id", event_id):
        return bad
    state = state_of(req)
    try:
        event = await run_in_threadpool(
            state.label,
            who,
            image_id,
            str(key),
            event_id=event_id,
            model_version=model_version or None,
            source="review" if mode == "review" else None,
        )
    except NotFound:
        return error(404, "no such image")
    except ValueError as e:
        return error(400, str(e))
    except OSError as e:
        return _journal_failed(e, "label")
    return _recorded(state, who, body, event_id=event.event_id)


@api.post("/undo")
async def api_undo(req: Request):
    body, who, err = await with_annotator(req)
    if err:
        return err
    event_id, retracts = body.get("event_id"), body.get("retracts")
    for name, value in (("event_id", event_id), ("retracts", retracts)):
        if bad := _event_id_error(name, value):
            return bad
    state = state_of(req)
    try:
        item = await run_in_threadpool(state.undo, who, event_id=event_id, retracts=retracts)
    except ValueError as e:
        return error(400, str(e))
    except OSError as e:
        return _journal_failed(e, "undo")
    return _recorded(state, who, body, item=item)


@api.post("/renew")
async def api_renew(req: Request):
    """The page says which images it holds (leases renewed); answers the stats."""
    body, who, err = await with_annotator(req)
    if err:
        return err
    try:
        have = held_ids(body)
    except ValueError as e:
        return error(400, str(e))
    state = state_of(req)
    state.renew(who, have)
    return JSONResponse(state.stats(who, review=body.get("mode") == "review"))


@api.get("/stats")
def api_stats(req: Request, mode: str = "label"):
    try:
        who = annotator_of(req)
    except ValueError as e:
        return error(400, str(e))
    return JSONResponse(state_of(req).stats(who, review=mode == "review"))


@api.get("/labels.csv")
def api_export(req: Request):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS))
    writer.writeheader()
    rows = sorted(state_of(req).current_events(), key=lambda e: (e.sop_instance_uid, e.frame))
    # `source` would tell annotators which images are hold-out: left blank here
    # (`mammo labels export` has it).
    writer.writerows(csv_safe(label_row(e) | {"source": ""}) for e in rows)
    return Response(
        buf.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="labels.csv"'},
    )


@images.get("/img")
async def image(req: Request, id: str = ""):
    """The image as a person sees it (the radiologist's rendering), not the model's."""
    try:
        path = state_of(req).thumbnail(id)
    except NotFound:
        return _plain(404, "no such image")
    png = await run_in_threadpool(viewing_png, path)
    return Response(
        png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"}
    )


@images.get("/cam")
async def cam(req: Request, id: str = "", flag: str = "", model: str = ""):
    try:
        path = await run_in_threadpool(state_of(req).cam, id, flag, model or None)
    except NotFound:
        return _plain(404, "no such image")
    except ValueError:
        return _plain(400, "flag must be biopsy or mag, model a model version")
    except CamUnavailable as e:  # its reasons name no server path (cams.py logs those)
        return _plain(503, str(e))
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})


def _plain(status: int, message: str) -> Response:
    """A fixed text answer (never the request echoed), typed so no browser sniffs it."""
    return Response(message, status_code=status, media_type="text/plain")
