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

from mammo_dagster.core.labels import CSV_COLUMNS, KEYS, label_row

from .cams import CamUnavailable
from .state import NotFound
from .web import annotator_of, error, held_ids, state_of, with_annotator

log = logging.getLogger("labeler")
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
        n = max(1, min(int(body.get("n", 1)), 50))
    except (TypeError, ValueError):
        return error(400, "n must be a number")
    mode = body.get("mode", "label")
    if mode not in ("label", "review"):
        return error(400, "mode must be label or review")
    state = state_of(req)
    items = await run_in_threadpool(state.next_items, who, n, held_ids(body), mode)
    return JSONResponse({"items": items, "stats": state.stats(who, review=mode == "review")})


@api.post("/label")
async def api_label(req: Request):
    body, who, err = await with_annotator(req)
    if err:
        return err
    key = body.get("key")
    if key is None and "has_biopsy_tool" in body and "has_mag_view" in body:
        flags = (bool(body["has_biopsy_tool"]), bool(body["has_mag_view"]))
        key = {v: k for k, v in KEYS.items()}[flags]
    event_id = body.get("event_id")
    if bad := _event_id_error("event_id", event_id):
        return bad
    model_version = body.get("model_version")
    state = state_of(req)
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
    state = state_of(req)
    state.renew(who, held_ids(body))
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
    writer.writerows(label_row(e) | {"source": ""} for e in rows)
    return Response(
        buf.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="labels.csv"'},
    )


@images.get("/img")
def image(req: Request, id: str = ""):
    try:
        path = state_of(req).thumbnail(id)
    except NotFound:
        return Response("no such image", status_code=404)
    return FileResponse(
        path, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"}
    )


@images.get("/cam")
async def cam(req: Request, id: str = "", flag: str = "", model: str = ""):
    try:
        path = await run_in_threadpool(state_of(req).cam, id, flag, model or None)
    except NotFound:
        return Response("no such image", status_code=404)
    except ValueError as e:
        return Response(str(e), status_code=400)
    except CamUnavailable as e:
        return Response(str(e), status_code=503)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})
