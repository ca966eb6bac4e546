"""A simulated labeler: answers the labeler's HTTP API from the synthetic ground truth.

It does what a person at the labeler does (asks for the next images, gives each its
label) through the same API the page uses, so the demo and benchmarks exercise the
real path: leases, queue order, hold-out share, journal, store.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Mapping


class SimulatedLabeler:
    def __init__(
        self,
        url: str,
        truth: Mapping[str, tuple[bool, bool]],
        annotator: str = "simulated",
        token: str | None = None,
    ) -> None:
        """`truth`: SOPInstanceUID -> (has_biopsy_tool, has_mag_view)."""
        self.url, self.truth, self.annotator, self.token = url.rstrip("/"), truth, annotator, token

    def _call(self, path: str, body: dict | None = None) -> dict:
        """GET `path`, or POST `body` as JSON; the answer's JSON."""
        headers = {"X-Annotator": self.annotator}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data, headers)  # POST when data
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def label(self, n: int) -> int:
        """Label up to `n` images in the order the labeler serves them; returns how many."""
        done = 0
        while done < n:
            items = self._call("/api/next", {"n": min(10, n - done)})["items"]
            if not items:
                break
            for item in items:
                biopsy, mag = self.truth[item["id"].rsplit("_", 1)[0]]
                self._call(
                    "/api/label",
                    {"id": item["id"], "has_biopsy_tool": biopsy, "has_mag_view": mag,
                     "model_version": item["model_version"]},
                )  # fmt: skip
                done += 1
        return done

    def stats(self) -> dict:
        return self._call("/api/stats")

    def _wait(self, done, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(self.stats()):
                return
            time.sleep(0.2)
        raise TimeoutError(f"the labeler {what} after {timeout:.0f} s")

    def wait_stored(self, timeout: float = 120.0) -> None:
        """Until the labeler has moved every label into the database."""
        self._wait(lambda s: s["pending_writes"] == 0, "still has labels to store", timeout)

    def wait_model(self, version: str, *, queued: bool, timeout: float = 60.0) -> None:
        """Until the labeler shows model `version` and, if that model `queued` images,
        serves its labeling queue."""
        self._wait(
            lambda s: s["model_version"] == version and (not queued or s["queue_model"] == version),
            f"does not serve model {version}" + (" and its queue" if queued else ""),
            timeout,
        )
