"""What the labeler knows, in memory: images, labels, order, leases.

Requests never wait for DuckDB: they read and change this state, and events go
to the journal (see journal.py). A background thread refreshes images, labels
written by others (imports, a second labeler), predictions, the labeling queue
and the current model from the store every few seconds, skipping a round when
another process holds the lock.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from mammo_dagster.core import queries
from mammo_dagster.core.batch import thumbnail_name
from mammo_dagster.core.gradcam import cam_file, write_cam
from mammo_dagster.core.home import Home
from mammo_dagster.core.labels import KEYS, LabelBook, LabelEvent, load_events
from mammo_dagster.core.metrics import logit
from mammo_dagster.core.modelstore import (
    CurrentModel,
    ModelCard,
    has_card,
    model_dir,
    read_current,
)
from mammo_dagster.core.preprocess import FLAGS
from mammo_dagster.core.splits import HOLDOUT_FRACTION, shuffle_key, split_of
from mammo_dagster.core.store import Store, StoreBusy

from .journal import EventWriter

log = logging.getLogger("labeler")
LEASE_S = 120.0
STARTUP_TIMEOUT_S = 300.0
#: Review mode: an unflagged image within this many logits of a threshold is borderline.
BORDERLINE_LOGITS = 1.5
#: Label keys by the flags they mean: (biopsy, mag) -> "1".."4".
KEY_OF = {flags: key for key, flags in KEYS.items()}


@dataclass(frozen=True)
class Prediction:
    """The current model's view of one image."""

    probs: tuple[float, float]  # per flag, in FLAGS order
    flags: tuple[bool, bool]  # at or above the model's thresholds
    margin: float  # logits between the closest probability and its threshold

    @property
    def reason(self) -> str:
        if any(self.flags):
            return "flagged"
        return "borderline" if self.margin < BORDERLINE_LOGITS else "unflagged"

    def cam_flags(self, thresholds: dict[str, float]) -> list[str]:
        """Flags worth a heatmap: those raised, else the one closest to being raised."""
        raised = [f for f, up in zip(FLAGS, self.flags, strict=True) if up]
        if raised:
            return raised
        closest = max(
            range(len(FLAGS)),
            key=lambda k: logit(self.probs[k]) - logit(thresholds.get(FLAGS[k], 0.5)),
        )
        return [FLAGS[closest]]


@dataclass(frozen=True)
class Image:
    """A labelable image: one decodable frame with a thumbnail."""

    sop_instance_uid: str
    frame: int
    study_instance_uid: str | None
    holdout: bool
    manufacturer: str | None
    laterality: str | None
    view_position: str | None
    view_modifiers: str | None
    mag_factor: float | None
    header_mag_hint: bool | None
    header_marker_hint: bool | None
    thumbnail: Path

    @property
    def id(self) -> str:
        return f"{self.sop_instance_uid}_{self.frame}"

    @property
    def key(self) -> tuple[str, int]:
        return (self.sop_instance_uid, self.frame)


@dataclass
class Lease:
    annotator: str
    until: float
    source: str


@dataclass
class Settings:
    """One labeler's settings; its data folder is the core's `Home` (a folder given as
    a path becomes the Home of that folder, with the environment's settings)."""

    home: Home
    annotator: str | None = None  # default annotator (else each one identifies)
    token: str | None = None
    holdout_share: float = HOLDOUT_FRACTION
    review_random_share: float = 0.1  # review mode: unflagged images mixed in as checks
    refresh_s: float = 2.0
    store_timeout_s: float = 5.0
    seed: str = "labeler-v1"
    loopback: bool = True  # bound to loopback: only loopback Host names are served
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = Home.of(self.home)


class NotFound(LookupError):
    pass


class CamUnavailable(RuntimeError):
    """No Grad-CAM for this image now (no model, or torch is not installed)."""


class AlreadyRunning(RuntimeError):
    """Another labeler serves this data folder (leases live in one process)."""


def _single_labeler(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    f = (folder / "labeler.lock").open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise AlreadyRunning(
            f"another labeler (pid {pid}) already serves {folder.parent}: share that one "
            "(several annotators can use it at once) or stop it first"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


class LabelerState:
    """Thread-safe in-memory state of one labeler process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        home = settings.home
        self._single = _single_labeler(home.labeler)
        self.store = Store(home.db, timeout_s=settings.store_timeout_s)
        patient = Store(home.db, timeout_s=STARTUP_TIMEOUT_S)  # start even if Dagster writes
        patient.migrate()
        self.writer = EventWriter(patient, home.labeler / "journal")
        recovered = self.writer.recover()
        self.writer.store = self.store
        if recovered:
            log.info("stored %d label event(s) from an earlier labeler's journal", recovered)
        self._lock = threading.RLock()
        self.images: dict[str, Image] = {}
        self.by_key: dict[tuple[str, int], Image] = {}
        self.order: list[str] = []  # non-hold-out images, random order
        self.holdout_order: list[str] = []
        self.queue: list[str] = []  # the pipeline's labeling_queue, when it wrote one
        self.queue_model: str | None = None  # the model version that queue came from
        self.predictions: dict[tuple[str, int], Prediction] = {}
        self.thresholds: dict[str, float] = {}
        self.model: CurrentModel | None = None
        self._review: tuple[tuple, list[str]] | None = None  # (version, order) cache
        self._cams: tuple[str, object, int] | None = None  # (version, network, size)
        self._cam_lock = threading.Lock()
        self.book = LabelBook()
        self.leases: dict[str, Lease] = {}
        self.returned: dict[str, list[str]] = {}  # annotator -> undone images to show again
        self._seq = 0
        self._index_version: tuple | None = None
        self._queue_version: tuple | None = None
        self._model_version: tuple | None = None
        self._stop = threading.Event()
        self.refresh(patient)
        self.writer.start()
        self._thread = threading.Thread(target=self._refresh_loop, name="refresh", daemon=True)

    # -- loading -------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.writer.close()
        self._single.close()  # releases the one-labeler lock

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.settings.refresh_s):
            try:
                self.refresh()
            except (StoreBusy, duckdb.Error) as e:
                log.debug("refresh skipped: %s", e)
            except Exception:
                log.exception("refresh failed")

    def refresh(self, store: Store | None = None) -> None:
        """Pull what changed in the store: images, others' labels, queue, model."""
        store = store or self.store
        version, rows, qversion, queue = queries.catalog_changes(
            store, self._index_version, self._queue_version
        )
        events = load_events(store, after_seq=self._seq)
        model = read_current(self.settings.home.models)
        predictions, pversion = None, None
        if model:
            pversion, predictions = queries.prediction_changes(
                store, model.version, self._model_version
            )
        thresholds = self._thresholds(model) if predictions is not None else None
        images = self._images(rows) if rows is not None else None
        with self._lock:
            if images is not None:
                self._set_images(images)
                self._index_version = version
            if queue is not None:
                self.queue = [f"{sop}_{frame}" for sop, frame in queue]
                self._queue_version = qversion
                self.queue_model = qversion[2]
            if events:
                self.book.add(events)
                self._seq = max(self._seq, max(e.seq for e in events))
            if predictions is not None:
                self.thresholds = thresholds or {}
                self.predictions = {
                    (s, f): self._prediction((pb, pm), (bool(fb), bool(fm)))
                    for s, f, pb, pm, fb, fm in predictions
                }
                self._model_version = pversion
            self.model = model

    def _thresholds(self, model: CurrentModel) -> dict[str, float]:
        try:
            card = ModelCard.read(model_dir(self.settings.home.models, model.version))
            return {f: card.thresholds[f] for f in FLAGS}
        except (OSError, ValueError, KeyError, TypeError):
            return {f: 0.5 for f in FLAGS}

    def _prediction(self, probs: tuple[float, float], flags: tuple[bool, bool]) -> Prediction:
        margin = min(
            abs(logit(p) - logit(self.thresholds.get(f, 0.5)))
            for f, p in zip(FLAGS, probs, strict=True)
        )
        return Prediction(probs, flags, margin)

    def _images(self, rows: list[tuple]) -> list[Image]:
        out = []
        for sop, frame, study, patient, *facts in rows:
            thumb = self.settings.home.thumbnails / thumbnail_name(sop, frame)
            if thumb.is_file():
                out.append(
                    Image(sop, frame, study, split_of(patient, study) == "holdout", *facts, thumb)
                )
        return out

    def _set_images(self, images: list[Image]) -> None:
        self.images = {im.id: im for im in images}
        self.by_key = {im.key: im for im in images}
        seed = self.settings.seed
        ids = sorted(self.images, key=lambda i: shuffle_key(i, seed))
        self.order = [i for i in ids if not self.images[i].holdout]
        self.holdout_order = [i for i in ids if self.images[i].holdout]

    # -- serving -------------------------------------------------------------
    def _free(self, image_id: str, annotator: str, now: float, have: set[str]) -> bool:
        if image_id in have:
            return False
        image = self.images.get(image_id)
        if image is None or image.key in self.book.current:
            return False
        lease = self.leases.get(image_id)
        return lease is None or lease.annotator == annotator or lease.until < now

    def _pick(self, annotator: str, now: float, have: set[str], want_holdout: bool):
        streams = [(self.holdout_order, "holdout")] if want_holdout else []
        streams += [(self.queue, "queue"), (self.order, "random"), (self.holdout_order, "holdout")]
        for allow_skipped in (False, True):  # skipped images come back last
            for ids, source in streams:
                for image_id in ids:
                    if not self._free(image_id, annotator, now, have):
                        continue
                    if source == "queue" and self.images[image_id].holdout:
                        continue
                    if not allow_skipped and self.images[image_id].key in self.book.last_skip:
                        continue
                    return image_id, source
        return None, None

    def review_order(self) -> list[str]:
        """Review mode's order: flagged and borderline images, closest to a threshold
        first, with a share of unflagged images mixed in as random checks. Never hold-out
        images: the model's answer must not anchor the labels it is evaluated on."""
        version = (self._model_version, self._index_version)
        if self._review and self._review[0] == version:
            return self._review[1]
        seed = self.settings.seed
        ranked, unflagged = [], []
        for key, pred in self.predictions.items():
            im = self.by_key.get(key)
            if im is None or im.holdout:
                continue
            if pred.reason == "unflagged":
                unflagged.append(im.id)
            else:
                ranked.append((pred.margin, shuffle_key(im.id, seed), im.id))
        ranked.sort()
        unflagged.sort(key=lambda i: shuffle_key(i, seed))
        share = min(max(self.settings.review_random_share, 0.0), 0.9)
        checks = max(math.ceil(share / (1 - share) * len(ranked)), min(10, len(unflagged)))
        checks = min(checks, len(unflagged)) if share > 0 else 0
        order: list[str] = []
        used = 0
        for _, _, image_id in ranked:
            order.append(image_id)
            if used < checks and used + 1 <= share * (len(order) + 1):
                order.append(unflagged[used])
                used += 1
        order += unflagged[used:checks]
        self._review = (version, order)
        return order

    def _pick_review(self, annotator: str, now: float, have: set[str]):
        order = self.review_order()
        for allow_skipped in (False, True):
            for image_id in order:
                if not self._free(image_id, annotator, now, have):
                    continue
                if not allow_skipped and self.images[image_id].key in self.book.last_skip:
                    continue
                return image_id, "review"
        return None, None

    def next_items(
        self, annotator: str, n: int, have: list[str], mode: str = "label"
    ) -> list[dict]:
        """Lease and return up to `n` images for `annotator`, after those it already `have`
        (`mode` "review": the model's flagged and borderline images, see review_order)."""
        if mode not in ("label", "review"):
            raise ValueError(f"mode must be label or review, got {mode!r}")
        now = time.time()
        held = set(have)
        out = []
        with self._lock:
            self._renew(annotator, have, now)
            labeled = len(self.book.current)
            held_out = sum(im.holdout for k in self.book.current if (im := self.by_key.get(k)))
            returned = self.returned.get(annotator, [])
            while len(out) < n:
                if returned:
                    image_id = returned.pop()
                    if image_id in held or image_id not in self.images:
                        continue
                    source = self.leases[image_id].source if image_id in self.leases else "random"
                elif mode == "review":
                    image_id, source = self._pick_review(annotator, now, held)
                    if image_id is None:
                        break
                else:
                    total = labeled + len(out) + 1
                    want = held_out < self.settings.holdout_share * total
                    image_id, source = self._pick(annotator, now, held, want)
                    if image_id is None:
                        break
                    held_out += source == "holdout"
                self.leases[image_id] = Lease(annotator, now + LEASE_S, source)
                held.add(image_id)
                out.append(self.item(image_id))
        return out

    def _renew(self, annotator: str, have: list[str], now: float) -> None:
        for image_id in have:
            lease = self.leases.get(image_id)
            if lease and lease.annotator == annotator:
                lease.until = now + LEASE_S

    def renew(self, annotator: str, have: list[str]) -> None:
        """Keep the images a page holds leased to its annotator (the page calls this often)."""
        with self._lock:
            self._renew(annotator, have, time.time())

    def item(self, image_id: str) -> dict:
        """What the UI shows for an image: no patient or study identifiers, no split."""
        im = self.images[image_id]
        hints = []
        if im.header_mag_hint:
            hints.append("mag" + (f" ×{im.mag_factor:.2g}" if im.mag_factor else ""))
        if im.header_marker_hint:
            hints.append("marker/biopsy")
        prediction, review = None, {}
        if self.model and (p := self.predictions.get(im.key)):
            prediction = {f: round(v, 3) for f, v in zip(FLAGS, p.probs, strict=True)}
            review = {
                "flags": dict(zip(FLAGS, p.flags, strict=True)),
                "model_key": KEY_OF[p.flags],
                "reason": p.reason,
                "cam_flags": p.cam_flags(self.thresholds),
                "thresholds": {f: round(self.thresholds.get(f, 0.5), 3) for f in FLAGS},
            }
        return {
            "id": image_id,
            "url": f"/img?id={image_id}",
            "vendor": im.manufacturer or "",
            "view": " ".join(x for x in (im.laterality, im.view_position) if x),
            "modifiers": im.view_modifiers or "",
            "header_hints": hints,
            "prediction": prediction,
            "model_version": self.model.version if prediction and self.model else None,
        } | review

    def cam(self, image_id: str, flag: str, version: str | None = None) -> Path:
        """Model `version`'s (default: the current model's) Grad-CAM overlay of `flag` on
        an image: the `gradcam` asset's file when it made one, else made now (and kept
        beside the asset's)."""
        with self._lock:
            im, model = self.images.get(image_id), self.model
        if im is None:
            raise NotFound(image_id)
        if model is None:
            raise CamUnavailable("no model yet: nothing to explain")
        version = version or model.version
        if not has_card(model_dir(self.settings.home.models, version)):
            raise CamUnavailable(f"no model {version}")
        dest = cam_file(self.settings.home, version, im.sop_instance_uid, im.frame, flag)
        if dest.is_file():
            return dest
        with self._cam_lock:  # one network, one image at a time (2 cores)
            if dest.is_file():
                return dest
            if self._cams is None or self._cams[0] != version:
                self._cams = (version, *self._load_cam_model(version))
            _, network, size = self._cams
            return write_cam(network, size, im.thumbnail, flag, dest)

    def _load_cam_model(self, version: str) -> tuple[object, int]:
        folder = model_dir(self.settings.home.models, version)
        try:
            from mammo_dagster.core.gradcam import load_torch_model

            size = ModelCard.read(folder).input_size
            return load_torch_model(folder), size
        except ImportError:
            raise CamUnavailable(
                "Grad-CAM needs torch here: pip install 'mammo-dagster[train]'"
            ) from None
        except (OSError, ValueError, KeyError) as e:
            raise CamUnavailable(f"model {version} has no network for Grad-CAM ({e})") from None

    def thumbnail(self, image_id: str) -> Path:
        with self._lock:
            im = self.images.get(image_id)
        if im is None:
            raise NotFound(image_id)
        return im.thumbnail

    # -- changing ------------------------------------------------------------
    def _record(self, event: LabelEvent) -> None:
        self.writer.submit(event)  # durable first; raises if the journal can't be written
        self.book.add([event])

    def label(
        self,
        annotator: str,
        image_id: str,
        key: str,
        *,
        event_id: str | None = None,
        model_version: str | None = None,
        source: str | None = None,
    ) -> LabelEvent:
        """Record key `1`-`4` (a label) or `s` (skip) for an image; idempotent by event id."""
        with self._lock:
            if event_id and event_id in self.book.events:
                return self.book.events[event_id]
            im = self.images.get(image_id)
            if im is None:
                raise NotFound(image_id)
            if key != "s" and key not in KEYS:
                raise ValueError(f"key must be one of 1 2 3 4 s, got {key!r}")
            lease = self.leases.get(image_id)
            if source == "review" and im.holdout:
                source = "holdout"  # a hold-out label stays one, whichever page gave it
            if source is None:
                source = (
                    lease.source
                    if lease and lease.annotator == annotator
                    else ("holdout" if im.holdout else "random")
                )
            if key == "s":
                fields: dict = {"action": "skip"}
            else:
                biopsy, mag = KEYS[key]
                fields = {"action": "label", "has_biopsy_tool": biopsy, "has_mag_view": mag}
            event = LabelEvent(
                im.sop_instance_uid,
                annotator=annotator,
                source=source,
                frame=im.frame,
                model_version=model_version,
                **fields,
                **({"event_id": event_id} if event_id else {}),
            )
            self._record(event)
            self.leases.pop(image_id, None)
            return event

    def undo(
        self, annotator: str, *, event_id: str | None = None, retracts: str | None = None
    ) -> dict | None:
        """Retract one of the annotator's labels or skips (`retracts`: the one the page put
        back on screen; else their newest); returns its image, shown again."""
        with self._lock:
            if event_id and event_id in self.book.events:  # a retried undo
                done = self.book.events[event_id]
                if done.action != "retract" or done.annotator != annotator:
                    raise ValueError("event_id names another event")
                im = self.by_key.get(self.book.events[done.retracts].image)
                return self.item(im.id) if im else None
            if retracts:
                target = self.book.events.get(retracts)
                if (
                    target is None
                    or target.annotator != annotator
                    or target.action == "retract"
                    or target.event_id in self.book.retracted
                ):
                    return None  # never stored (a refused label) or already undone
            else:
                target = self.book.undo_target(annotator)
            if target is None:
                return None
            kwargs = {"event_id": event_id} if event_id else {}
            self._record(
                LabelEvent(
                    target.sop_instance_uid,
                    "retract",
                    annotator,
                    target.source,
                    frame=target.frame,
                    retracts=target.event_id,
                    **kwargs,
                )
            )
            im = self.by_key.get(target.image)
            if im is None:
                return None
            self.leases[im.id] = Lease(annotator, time.time() + LEASE_S, target.source)
            return self.item(im.id)

    # -- reporting -----------------------------------------------------------
    def stats(self, annotator: str | None = None, *, review: bool = False) -> dict:
        """Progress for the bar. `to_review` only when asked (`review`): in label mode
        its changes would tell which labeled images are hold-out."""
        with self._lock:
            labeled = sum(k in self.by_key for k in self.book.current)
            watermark = self.model.label_seq if self.model else 0
            new = sum(1 for e in self.book.current.values() if e.seq is None or e.seq > watermark)
            every = self.settings.home.retrain_every
            return {
                "labeled": labeled,
                "remaining": len(self.images) - labeled,
                "images": len(self.images),
                "mine": sum(e.annotator == annotator for e in self.book.current.values())
                if annotator
                else None,
                "undo_depth": self.book.undo_depth(annotator) if annotator else None,
                "until_retrain": max(0, every - new),
                "to_review": sum(
                    1 for i in self.review_order() if self.images[i].key not in self.book.current
                )
                if review
                else None,
                "model_version": self.model.version if self.model else None,
                "queue_model": self.queue_model,
                "pending_writes": len(self.writer.pending),
                "write_error": self.writer.last_error,
            }

    def current_events(self) -> list[LabelEvent]:
        with self._lock:
            return list(self.book.current.values())
