"""Leases: an image served to one annotator is held for them a while, so that two
annotators labeling at once never get the same image (one labeler process holds all)."""

from __future__ import annotations

from dataclasses import dataclass

LEASE_S = 120.0


@dataclass
class Lease:
    annotator: str
    until: float  # time.time() it runs out
    source: str  # the stream it was served from: queue | random | holdout | review


class Leases(dict[str, Lease]):
    """Image id -> its lease."""

    def free_for(self, image_id: str, annotator: str, now: float) -> bool:
        """Whether `annotator` may be served the image: unleased, theirs, or run out."""
        lease = self.get(image_id)
        return lease is None or lease.annotator == annotator or lease.until < now

    def grant(self, image_id: str, annotator: str, source: str, now: float) -> None:
        self[image_id] = Lease(annotator, now + LEASE_S, source)

    def renew(self, annotator: str, image_ids: list[str], now: float) -> None:
        """Extend `annotator`'s leases of these images (others' are left alone)."""
        for image_id in image_ids:
            lease = self.get(image_id)
            if lease and lease.annotator == annotator:
                lease.until = now + LEASE_S
