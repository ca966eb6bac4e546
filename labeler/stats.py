"""The progress bar's numbers: labeled, to go, the annotator's own, labels until the
next retrain, what review mode has left, and whether labels are still being stored."""

from __future__ import annotations

from mammo_dagster.core.store.labels import LabelBook

from .catalog import Catalog
from .journal import EventWriter


def progress(
    book: LabelBook,
    catalog: Catalog,
    writer: EventWriter,
    annotator: str | None,
    *,
    retrain_every: int,
    review_order: list[str] | None,
) -> dict:
    """`to_review` only with a `review_order` (review mode): in label mode its changes
    would tell which labeled images are hold-out."""
    current = book.current
    labeled = sum(k in catalog.by_key for k in current)
    model = catalog.model
    watermark = model.label_seq if model else 0
    new = sum(1 for e in current.values() if e.seq is None or e.seq > watermark)
    return {
        "labeled": labeled,
        "remaining": len(catalog.images) - labeled,
        "images": len(catalog.images),
        "mine": sum(e.annotator == annotator for e in current.values()) if annotator else None,
        "undo_depth": book.undo_depth(annotator) if annotator else None,
        "until_retrain": max(0, retrain_every - new),
        "to_review": None
        if review_order is None
        else sum(1 for i in review_order if catalog.images[i].key not in current),
        "model_version": model.version if model else None,
        "queue_model": catalog.queue_model,
        "pending_writes": len(writer.pending),
        "write_error": writer.last_error,
    }
