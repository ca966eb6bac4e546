"""The catalog: the images a labeler serves and what the pipeline says about them (the
labeling queue, the current model and its predictions), read from the store in the
background and held in memory, so that no request waits for DuckDB."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from mammo_dagster.core.home import Home
from mammo_dagster.core.imaging.batch import thumbnail_name
from mammo_dagster.core.imaging.preprocess import FLAGS
from mammo_dagster.core.learning import review
from mammo_dagster.core.metrics import logit
from mammo_dagster.core.model.modelstore import CurrentModel, ModelCard, model_dir, read_current
from mammo_dagster.core.model.splits import shuffle_key, split_of
from mammo_dagster.core.store import queries
from mammo_dagster.core.store.db import Store
from mammo_dagster.core.store.labels import KEYS

#: Label keys by the flags they mean: (biopsy, mag) -> "1".."4".
KEY_OF = {flags: key for key, flags in KEYS.items()}
#: Seconds before the index is read again while some of its frames have no thumbnail
#: yet (a drop is indexed before its thumbnails are rendered).
RECHECK_S = 10.0


@dataclass(frozen=True)
class Prediction:
    """The current model's view of one image."""

    probs: tuple[float, float]  # per flag, in FLAGS order
    flags: tuple[bool, bool]  # at or above the model's thresholds
    margin: float  # logits between the closest probability and its threshold

    @property
    def reason(self) -> str:
        return review.reason(self.flags, self.margin)

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


@dataclass(frozen=True)
class Changes:
    """What changed in the store since the catalog last looked (None: unchanged)."""

    index_version: tuple
    images: list[Image] | None
    queue_version: tuple
    queue: list[tuple] | None
    model: CurrentModel | None
    predictions_version: tuple | None
    predictions: list[tuple] | None
    thresholds: dict[str, float] | None
    missing_thumbnails: int = 0  # indexed frames left out: no thumbnail yet


class Catalog:
    """Images by id, the orders they are served in, the queue and the model's view.
    `read` runs outside the labeler's lock, `apply` and the rest under it."""

    def __init__(self, home: Home, seed: str) -> None:
        self.home, self.seed = home, seed
        self.images: dict[str, Image] = {}
        self.by_key: dict[tuple[str, int], Image] = {}
        self.order: list[str] = []  # non-hold-out images, random order
        self.holdout_order: list[str] = []
        self.queue: list[str] = []  # the pipeline's labeling_queue, when it wrote one
        self.queue_model: str | None = None  # the model version that queue came from
        self.predictions: dict[tuple[str, int], Prediction] = {}
        self.thresholds: dict[str, float] = {}
        self.model: CurrentModel | None = None
        self.index_version: tuple | None = None
        self.queue_version: tuple | None = None
        self.model_version: tuple | None = None
        self._review: tuple[tuple, list[str]] | None = None  # (versions, order) cache
        self._recheck_at = math.inf  # when to read an unchanged index again

    # -- loading -------------------------------------------------------------
    def read(self, store: Store) -> Changes:
        """What changed in the store: images, queue, current model, its predictions."""
        since = self.index_version if time.monotonic() < self._recheck_at else None
        version, rows, qversion, queue = queries.catalog_changes(store, since, self.queue_version)
        model = read_current(self.home.models)
        predictions, pversion = None, None
        if model:
            pversion, predictions = queries.prediction_changes(
                store, model.version, self.model_version
            )
        images = self._images(rows) if rows is not None else None
        return Changes(
            version,
            images,
            qversion,
            queue,
            model,
            pversion,
            predictions,
            self._thresholds(model) if predictions is not None else None,
            len(rows) - len(images) if rows is not None and images is not None else 0,
        )

    def apply(self, changes: Changes) -> None:
        if changes.images is not None:
            self._set_images(changes.images)
            self.index_version = changes.index_version
            # frames whose thumbnails are still being rendered join on a later read
            missing = changes.missing_thumbnails
            self._recheck_at = time.monotonic() + RECHECK_S if missing else math.inf
        if changes.queue is not None:
            self.queue = [f"{sop}_{frame}" for sop, frame in changes.queue]
            self.queue_version = changes.queue_version
            self.queue_model = changes.queue_version[2]
        if changes.predictions is not None:
            self.thresholds = changes.thresholds or {}
            self.predictions = {
                (s, f): self._prediction((pb, pm), (bool(fb), bool(fm)))
                for s, f, pb, pm, fb, fm in changes.predictions
            }
            self.model_version = changes.predictions_version
        self.model = changes.model

    def _thresholds(self, model: CurrentModel) -> dict[str, float]:
        try:
            card = ModelCard.read(model_dir(self.home.models, model.version))
            return {f: card.thresholds[f] for f in FLAGS}
        except (OSError, ValueError, KeyError, TypeError):
            return {f: 0.5 for f in FLAGS}

    def _prediction(self, probs: tuple[float, float], flags: tuple[bool, bool]) -> Prediction:
        return Prediction(probs, flags, review.margin(probs, self.thresholds))

    def _images(self, rows: list[tuple]) -> list[Image]:
        out = []
        for sop, frame, study, patient, *facts in rows:
            thumb = self.home.thumbnails / thumbnail_name(sop, frame)
            if thumb.is_file():
                out.append(
                    Image(sop, frame, study, split_of(patient, study) == "holdout", *facts, thumb)
                )
        return out

    def _set_images(self, images: list[Image]) -> None:
        self.images = {im.id: im for im in images}
        self.by_key = {im.key: im for im in images}
        ids = sorted(self.images, key=lambda i: shuffle_key(i, self.seed))
        self.order = [i for i in ids if not self.images[i].holdout]
        self.holdout_order = [i for i in ids if self.images[i].holdout]

    # -- reading -------------------------------------------------------------
    def review_order(self, strategy: review.ReviewStrategy) -> list[str]:
        """Review mode's order of the current model's predictions (see core.learning.review).
        Never hold-out images: the model's answer must not anchor the labels it is
        evaluated on."""
        versions = (self.model_version, self.index_version, len(self.images), strategy.name)
        if self._review and self._review[0] == versions:
            return self._review[1]
        items = [
            review.Reviewable(im.id, pred.margin, pred.reason)
            for key, pred in self.predictions.items()
            if (im := self.by_key.get(key)) is not None and not im.holdout
        ]
        order = strategy.order(items, self.seed)
        self._review = (versions, order)
        return order

    def item(self, image_id: str) -> dict:
        """What the UI shows for an image: no patient or study identifiers, no split."""
        im = self.images[image_id]
        hints = []
        if im.header_mag_hint:
            hints.append("mag" + (f" ×{im.mag_factor:.2g}" if im.mag_factor else ""))
        if im.header_marker_hint:
            hints.append("marker/biopsy")
        prediction, extra = None, {}
        if self.model and (p := self.predictions.get(im.key)):
            prediction = {f: round(v, 3) for f, v in zip(FLAGS, p.probs, strict=True)}
            extra = {
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
        } | extra
