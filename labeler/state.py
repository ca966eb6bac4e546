"""What the labeler knows, in memory, and how it serves it: the catalog of images
(catalog.py), labels (the core's LabelBook), leases (leases.py), the label and review
orders, Grad-CAM (cams.py) and progress (stats.py).

Requests never wait for DuckDB: they read and change this state, and events go
to the journal (see journal.py). A background thread refreshes images, labels
written by others (imports, a second labeler), predictions, the labeling queue
and the current model from the store every few seconds, skipping a round when
another process holds the lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path

import duckdb

from mammo_dagster.core.learning.review import BorderlineFirst
from mammo_dagster.core.store.db import Store, StoreBusy
from mammo_dagster.core.store.labels import KEYS, LabelBook, LabelEvent, load_events

from .cams import Cams, CamUnavailable
from .catalog import Catalog, Image
from .journal import EventWriter
from .leases import Leases
from .settings import Settings
from .stats import progress

__all__ = ["AlreadyRunning", "CamUnavailable", "LabelerState", "NotFound", "Settings"]

log = logging.getLogger("labeler")
STARTUP_TIMEOUT_S = 300.0


class NotFound(LookupError):
    pass


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
        self.catalog = Catalog(home, settings.seed)
        self.cams = Cams(home)
        self.book = LabelBook()
        self.leases = Leases()
        self._seq = 0
        self._stop = threading.Event()
        self.refresh(patient)
        self.writer.start()
        self._thread = threading.Thread(target=self._refresh_loop, name="refresh", daemon=True)

    @property
    def images(self) -> dict[str, Image]:
        return self.catalog.images

    @property
    def predictions(self) -> dict:
        return self.catalog.predictions

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
        changes = self.catalog.read(store)
        events = load_events(store, after_seq=self._seq)
        with self._lock:
            self.catalog.apply(changes)
            if events:
                self.book.add(events)
                self._seq = max(self._seq, max(e.seq for e in events))

    # -- serving -------------------------------------------------------------
    def _free(self, image_id: str, annotator: str, now: float, have: set[str]) -> bool:
        if image_id in have:
            return False
        image = self.catalog.images.get(image_id)
        if image is None or image.key in self.book.current:
            return False
        return self.leases.free_for(image_id, annotator, now)

    def _pick(self, annotator: str, now: float, have: set[str], want_holdout: bool):
        c = self.catalog
        streams = [(c.holdout_order, "holdout")] if want_holdout else []
        streams += [(c.queue, "queue"), (c.order, "random"), (c.holdout_order, "holdout")]
        for allow_skipped in (False, True):  # skipped images come back last
            for ids, source in streams:
                for image_id in ids:
                    if not self._free(image_id, annotator, now, have):
                        continue
                    if source == "queue" and c.images[image_id].holdout:
                        continue
                    if not allow_skipped and c.images[image_id].key in self.book.last_skip:
                        continue
                    return image_id, source
        return None, None

    def review_order(self) -> list[str]:
        """Review mode's order: flagged and borderline images, closest to a threshold
        first, with a share of unflagged images mixed in as random checks (core.learning.review);
        never hold-out images."""
        return self.catalog.review_order(BorderlineFirst(self.settings.review_random_share))

    def _pick_review(self, annotator: str, now: float, have: set[str]):
        for allow_skipped in (False, True):
            for image_id in self.review_order():
                if not self._free(image_id, annotator, now, have):
                    continue
                if not allow_skipped and self.catalog.images[image_id].key in self.book.last_skip:
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
            self.leases.renew(annotator, have, now)
            by_key = self.catalog.by_key
            labeled = len(self.book.current)
            held_out = sum(im.holdout for k in self.book.current if (im := by_key.get(k)))
            while len(out) < n:
                if mode == "review":
                    image_id, source = self._pick_review(annotator, now, held)
                else:
                    total = labeled + len(out) + 1
                    want = held_out < self.settings.holdout_share * total
                    image_id, source = self._pick(annotator, now, held, want)
                    held_out += source == "holdout"
                if image_id is None:
                    break
                self.leases.grant(image_id, annotator, source, now)
                held.add(image_id)
                out.append(self.catalog.item(image_id))
        return out

    def renew(self, annotator: str, have: list[str]) -> None:
        """Keep the images a page holds leased to its annotator (the page calls this often)."""
        with self._lock:
            self.leases.renew(annotator, have, time.time())

    def item(self, image_id: str) -> dict:
        """What the UI shows for an image: no patient or study identifiers, no split."""
        with self._lock:
            return self.catalog.item(image_id)

    def cam(self, image_id: str, flag: str, version: str | None = None) -> Path:
        """Model `version`'s (default: the current model's) Grad-CAM overlay of `flag` on
        an image."""
        with self._lock:
            im, model = self.catalog.images.get(image_id), self.catalog.model
        if im is None:
            raise NotFound(image_id)
        if model is None:
            raise CamUnavailable("no model yet: nothing to explain")
        return self.cams.overlay(im, flag, version or model.version)

    def thumbnail(self, image_id: str) -> Path:
        with self._lock:
            im = self.catalog.images.get(image_id)
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
            im = self.catalog.images.get(image_id)
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
                im = self.catalog.by_key.get(self.book.events[done.retracts].image)
                return self.catalog.item(im.id) if im else None
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
            im = self.catalog.by_key.get(target.image)
            if im is None:
                return None
            self.leases.grant(im.id, annotator, target.source, time.time())
            return self.catalog.item(im.id)

    # -- reporting -----------------------------------------------------------
    def stats(self, annotator: str | None = None, *, review: bool = False) -> dict:
        """Progress for the bar (see stats.progress); `to_review` only when asked."""
        with self._lock:
            return progress(
                self.book,
                self.catalog,
                self.writer,
                annotator,
                retrain_every=self.settings.home.retrain_every,
                review_order=self.review_order() if review else None,
            )

    def current_events(self) -> list[LabelEvent]:
        with self._lock:
            return list(self.book.current.values())
