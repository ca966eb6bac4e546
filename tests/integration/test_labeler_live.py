"""The labeler as a real server: a real browser pressing keys fast, and 4 annotators
labeling at once while another process keeps opening the DuckDB file."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from labeler.process import running
from mammo_dagster.core.store.db import DB_NAME, Store
from mammo_dagster.core.store.labels import KEYS, load_events
from tests.factory import fake_catalog, fake_model

POKER = """
import sys, time
from pathlib import Path
from mammo_dagster.core.store.db import Store
store, stop = Store(Path(sys.argv[1]), timeout_s=120), Path(sys.argv[2])
store.run(lambda c: c.execute("SELECT 1"), read_only=True)
print("ready", flush=True)
n = 0
while not stop.exists():
    if n % 2:
        store.run(lambda c: c.execute("SELECT count(*) FROM label_events").fetchone(),
                  read_only=True)
    else:
        store.run(lambda c: c.execute(
            "CREATE TABLE IF NOT EXISTS poke (i INTEGER); INSERT INTO poke VALUES (1)"))
    n += 1
    time.sleep(0.01)
print(n)
"""


def _wait_stored(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/api/stats").json()["pending_writes"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError("labels still pending after the database freed up")


@pytest.mark.slow
def test_four_annotators_while_another_process_uses_the_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    fake_catalog(home, 1000)
    stop = tmp_path / "stop"
    poker = subprocess.Popen(
        [sys.executable, "-c", POKER, str(home / DB_NAME), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert poker.stdout.readline().strip() == "ready"
    errors: list[str] = []
    t0 = time.monotonic()
    try:
        with running(home, log=tmp_path / "labeler.log") as url:

            def annotate(who: str) -> None:
                rng = random.Random(who)
                with httpx.Client(base_url=url, timeout=30) as client:
                    for _ in range(250):
                        r = client.post("/api/next", json={"n": 1, "annotator": who})
                        if r.status_code != 200 or not r.json()["items"]:
                            errors.append(f"{who} next: {r.status_code} {r.text[:80]}")
                            return
                        image_id = r.json()["items"][0]["id"]
                        body = {"id": image_id, "key": rng.choice("1234"), "annotator": who}
                        r = client.post("/api/label", json=body)
                        if r.status_code != 200:
                            errors.append(f"{who} label: {r.status_code} {r.text[:80]}")
                            return

            threads = [threading.Thread(target=annotate, args=(f"a{i}",)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            _wait_stored(url)
    finally:
        stop.write_text("")
        pokes = int(poker.communicate(timeout=120)[0].strip() or 0)
        seconds = time.monotonic() - t0
    assert not errors, errors[:5]
    assert pokes >= 5, (pokes, seconds)  # the other process got the file, again and again
    events = load_events(Store(home / DB_NAME))
    assert len(events) == 1000 and all(e.action == "label" for e in events)
    assert len({e.image for e in events}) == 1000  # no image labeled twice
    assert sorted({e.annotator for e in events}) == ["a0", "a1", "a2", "a3"]
    assert all(sum(e.annotator == a for e in events) == 250 for a in ("a0", "a1"))


@pytest.mark.slow
def test_fast_keys_in_a_real_browser(tmp_path: Path, browser) -> None:
    home = tmp_path / "home"
    fake_catalog(home, 30)
    with running(home, log=tmp_path / "labeler.log") as url:
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        page.goto(url)
        page.fill("input[name=annotator]", "tess")
        page.press("input[name=annotator]", "Enter")
        page.wait_for_function("document.querySelector('#stage')?.dataset.id")
        page.evaluate(
            """() => { window.__shown = [document.querySelector('#stage').dataset.id];
            new MutationObserver(() => window.__shown.push(
              document.querySelector('#stage').dataset.id)).observe(
              document.querySelector('#stage'), {attributes: true}); }"""
        )
        for key in ("1", "2", "3", "4", "s", "u"):
            page.keyboard.press(key)  # no waiting between keys
        page.wait_for_function("window.__labeler.pending === 0")
        shown = []  # images on screen in turn ("" while waiting for the next one)
        for image_id in page.evaluate("window.__shown"):
            if image_id and (not shown or shown[-1] != image_id):
                shown.append(image_id)
        now = page.evaluate("document.querySelector('#stage').dataset.id")
        page.evaluate(
            "() => { const i = document.createElement('input'); i.id = 'note';"
            " document.body.appendChild(i); }"
        )
        page.type("#note", "1234s")  # typing into an input never labels
        _wait_stored(url)
    events = load_events(Store(home / DB_NAME))
    assert [e.action for e in events] == ["label"] * 4 + ["skip", "retract"]
    assert [f"{e.sop_instance_uid}_{e.frame}" for e in events[:5]] == shown[:5]
    assert [(e.has_biopsy_tool, e.has_mag_view) for e in events[:4]] == [KEYS[k] for k in "1234"]
    assert events[5].retracts == events[4].event_id
    assert len(set(shown[:5])) == 5  # five images labeled or skipped, none served twice
    # after the skip the next image may flash up (if it had arrived); undo then brings
    # the skipped one back on screen
    assert now == shown[-1] == shown[4] and len(shown) in (5, 7)
    assert not set(shown[5:6]) & set(shown[:5])


@pytest.mark.slow
def test_review_mode_in_a_real_browser(tmp_path: Path, browser) -> None:
    """y confirms the model, n then a key corrects it, g shows the Grad-CAM overlay
    (here the files the `gradcam` asset would have written), s skips, u undoes."""
    import numpy as np
    from PIL import Image

    from mammo_dagster.core.home import Home
    from mammo_dagster.core.model.gradcam import cam_file

    home = tmp_path / "home"
    ids = fake_catalog(home, 30)
    probs = fake_model(home, ids)
    for image_id in ids:
        sop, frame = image_id.rsplit("_", 1)
        for flag in ("biopsy", "mag"):
            path = cam_file(Home(home), "m0001", sop, int(frame), flag)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), (255, 0, 0), np.uint8)).save(path)
    with running(home, log=tmp_path / "labeler.log") as url:
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        page.goto(f"{url}/review")
        page.fill("input[name=annotator]", "rita")
        page.press("input[name=annotator]", "Enter")
        page.wait_for_url("**/review")
        page.wait_for_function("document.querySelector('#stage')?.dataset.id")
        first = page.evaluate("window.__labeler.buf[0]")
        assert first["reason"] in ("flagged", "borderline") and "says" in page.inner_text("#pred")
        for flag in ("biopsy", "mag"):  # which side of its threshold each probability is
            v, th = first["prediction"][flag], first["thresholds"][flag]
            side = r"≥ [\d.]+: flagged" if v >= th else r"< [\d.]+: not flagged"
            assert re.search(rf"{flag} [\d.]+ {side}", page.inner_text("#pred")), flag
        page.keyboard.press("y")  # the model is right
        page.wait_for_function(f"document.querySelector('#stage').dataset.id !== '{first['id']}'")
        second = page.evaluate("window.__labeler.buf[0]")
        held: list = []  # overlays made on demand take seconds: hold them to see the wait
        page.route("**/cam?**", lambda route: held.append(route))
        page.keyboard.press("g")  # where it looked
        page.wait_for_function(
            "document.querySelector('#pred').textContent.includes('(computing…)')", timeout=1000
        )
        for route in held:
            route.continue_()
        page.unroute_all(behavior="ignoreErrors")
        page.wait_for_function("document.querySelector('#stage img')?.src.includes('/cam?')")
        page.wait_for_function("!document.querySelector('#pred').textContent.includes('computing')")
        assert f"Grad-CAM: {second['cam_flags'][0]}" in page.inner_text("#pred")
        for _ in second["cam_flags"]:
            page.keyboard.press("g")  # through each flag's heatmap, then off
        page.wait_for_function("!document.querySelector('#stage img').src.includes('/cam?')")
        page.keyboard.press("n")  # wrong ...
        assert "which is right?" in page.inner_text("#pred")
        page.keyboard.press("3")  # ... it is neither
        page.keyboard.press("s")
        page.keyboard.press("u")
        page.wait_for_function("window.__labeler.pending === 0")
        shown = page.evaluate("document.querySelector('#stage').dataset.id")
        _wait_stored(url)
    events = load_events(Store(home / DB_NAME))
    assert [e.action for e in events] == ["label", "label", "skip", "retract"]
    assert {e.source for e in events} == {"review"}
    assert events[0].image == (first["id"].rsplit("_", 1)[0], 0)
    pb, pm = probs[first["id"]]
    assert (events[0].has_biopsy_tool, events[0].has_mag_view) == (pb >= 0.5, pm >= 0.5)
    assert events[1].image == (second["id"].rsplit("_", 1)[0], 0)
    assert (events[1].has_biopsy_tool, events[1].has_mag_view) == (False, False)
    assert events[0].model_version == "m0001"
    assert events[3].retracts == events[2].event_id and shown == f"{events[2].sop_instance_uid}_0"
