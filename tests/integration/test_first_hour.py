"""The first hour (issue 19): `mammo dev` runs Dagster with its daemon while three drops
arrive (new studies, only duplicates, only junk), and a real browser walks through the
Dagster UI and the labeler's review mode, keeping its screenshots.

Screenshots go to $MAMMO_TEST_ARTIFACTS when set, else to the test's temporary folder
(the path is printed)."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from labeler.process import free_port
from mammo_dagster.core.imaging.batch import READY_MARKER
from mammo_dagster.core.store.db import DB_NAME, Store
from mammo_dagster.core.store.labels import append_events
from mammo_dagster.core.synthetic.archive import generate_archive
from mammo_dagster.core.synthetic.truth import read_ground_truth, truth_labels
from tests.factory import FAKE_PATIENT_ID

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY = {"size": 64, "epochs": 2, "batch_size": 16, "patience": 2}


@dataclass
class Dev:
    """A data folder with a current model, and `mammo dev` serving it."""

    home: Path
    dagster: str  # the UI's URL
    labeler: str
    proc: subprocess.Popen
    log: Path
    artifacts: Path

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home / "dagster"))

    def alive(self) -> None:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _first_model(home: Path) -> None:
    """What a user has after `make demo`, small: drop d1 ingested and predicted through
    Dagster (in the instance `mammo dev` will use), labels from the ground truth, a
    tiny model, the study CSV and its Grad-CAM overlays."""
    from mammo_dagster.defs.gradcam import gradcam
    from mammo_dagster.defs.ingest import dicom_index, thumbnails
    from mammo_dagster.defs.model import (
        image_predictions,
        labels,
        onnx_model,
        study_predictions,
        trained_model,
        training_set,
    )
    from mammo_dagster.defs.resources import resources_for

    images = generate_archive(
        home / "incoming" / "d1", studies=8, seed=6, size="small",
        ground_truth=home / "synthetic" / "d1_ground_truth.csv",
    )  # fmt: skip
    (home / "incoming" / "d1" / READY_MARKER).touch()
    (home / "dagster").mkdir(parents=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster" / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    instance.add_dynamic_partitions("drops", ["d1"])
    resources = resources_for(home)
    ingest = {"ops": {"dicom_index": {"config": {"workers": 1}},
                      "thumbnails": {"config": {"workers": 1}}}}  # fmt: skip
    assets = [dicom_index, thumbnails, image_predictions, labels, training_set, trained_model,
              onnx_model, study_predictions, gradcam]  # fmt: skip

    def run(selection: list[str], partition: str | None = None, config: dict | None = None):
        result = dg.materialize(
            assets, instance=instance, resources=resources, selection=selection,
            partition_key=partition, run_config=config or {},
        )  # fmt: skip
        assert result.success

    run(["dicom_index", "thumbnails"], "d1", ingest)
    append_events(Store(home / DB_NAME), truth_labels(images))
    run(["training_set", "trained_model", "onnx_model"],
        config={"ops": {"trained_model": {"config": TINY}}})  # fmt: skip
    run(["image_predictions"], "d1")
    run(["study_predictions", "gradcam"])


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    root = tmp_path_factory.mktemp("first_hour")
    home = root / "home"
    artifacts = Path(os.environ.get("MAMMO_TEST_ARTIFACTS") or root / "screenshots")
    artifacts.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {artifacts}")
    env = {"MAMMO_HOME": str(home), "MAMMO_PATIENT_SALT": "test-salt",
           "DAGSTER_HOME": str(home / "dagster")}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before the autouse fixture
        for k, v in env.items():
            mp.setenv(k, v)
        _first_model(home)
    dport, lport = free_port(), free_port()
    log = root / "dev.log"  # a file, not a pipe: a pipe nobody reads fills up and blocks
    proc = subprocess.Popen(
        [sys.executable, "-m", "mammo_dagster.cli", "dev", "--home", str(home),
         "--dagster-port", str(dport), "--labeler-port", str(lport)],
        env=os.environ | env | {"PYTHONPATH": str(REPO)},
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    d = Dev(home, f"http://127.0.0.1:{dport}", f"http://127.0.0.1:{lport}", proc, log, artifacts)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (
            _up(f"{d.dagster}/server_info") and _up(f"{d.labeler}/")
        ):
            d.alive()
            time.sleep(1)
        assert _up(f"{d.dagster}/server_info"), log.read_text()[-3000:]
        yield d
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: both servers stop cleanly
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _junk(folder: Path, some_dicom: Path) -> None:
    """A drop of files a scanner share collects: none of them an image."""
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("call the reading room\n")
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "random.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "cut.dcm").write_bytes(some_dicom.read_bytes()[:300])  # a truncated copy


def _sensor_ticks(instance: dg.DagsterInstance, name: str) -> list:
    from dagster._core.scheduler.instigation import InstigatorType

    states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    state = next((s for s in states if s.instigator_name == name), None)
    if state is None:
        return []
    return instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=20)


def _check_evaluations(instance: dg.DagsterInstance) -> dict[tuple[str, str], object]:
    """(partition, check name) -> the latest evaluation of a dicom_index check."""
    out = {}
    for record in instance.get_run_records():  # newest first
        partition = record.dagster_run.tags.get("dagster/partition")
        if not partition:
            continue
        for event in instance.all_logs(
            record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ):
            evaluation = event.dagster_event.event_specific_data
            out.setdefault((partition, evaluation.check_name), evaluation)
    return out


def test_new_drops_reach_the_csv_and_empty_ones_are_reported(dev: Dev) -> None:
    """A new drop (fresh UIDs), a duplicate-only drop and a junk drop arrive together:
    the first reaches study_predictions.csv, the other two are a WARN check and a sensor
    skip reason, and hold nothing back."""
    home = dev.home
    incoming = home / "incoming"
    fresh = generate_archive(
        incoming / "fresh", studies=2, seed=4242, size="small",
        ground_truth=home / "synthetic" / "fresh_ground_truth.csv",
    )  # fmt: skip
    shutil.copytree(incoming / "d1", incoming / "again")  # every image indexed before
    _junk(incoming / "junk", fresh[0].path)
    for drop in ("fresh", "again", "junk"):
        (incoming / drop / READY_MARKER).touch()
    study_csv = home / "predictions" / "study_predictions.csv"
    want = {i.study_instance_uid for i in fresh}
    rows: dict[str, dict] = {}
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline:
        dev.alive()
        if study_csv.exists():
            rows = {r["study_id"]: r for r in csv.DictReader(study_csv.open())}
            if want <= set(rows):
                break
        time.sleep(3)
    assert want <= set(rows), dev.log.read_text()[-4000:]
    for study in want:  # every image of the new drop was predicted
        assert int(rows[study]["image_count"]) == sum(i.study_instance_uid == study for i in fresh)
    d1 = read_ground_truth(home / "synthetic" / "d1_ground_truth.csv")
    assert set(rows) == want | {i.study_instance_uid for i in d1}  # nothing else counted twice
    assert FAKE_PATIENT_ID not in study_csv.read_text()
    assert not any(i.patient_id in study_csv.read_text() for i in fresh + d1)

    instance = dev.instance()
    checks = _check_evaluations(instance)
    for drop in ("again", "junk"):  # reported: nothing new in them
        check = checks[(drop, "has_new_frames")]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN, drop
    assert checks[("again", "has_new_frames")].metadata["duplicates"].value == len(d1)
    assert checks[("junk", "has_new_frames")].metadata["bad_files"].value == 4
    assert checks[("fresh", "has_new_frames")].passed
    assert "junk" in checks[("junk", "failure_rate")].metadata["drops_over_threshold"].value
    # ... and the sensor that writes the CSV says why it left them out, every idle tick
    # (once each drop's ingest has finished: on a loaded machine one finishes later)
    said = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ("again (" in said and "junk (" in said):
        ticks = _sensor_ticks(instance, "new_model_sensor")
        said = next((t.skip_reason for t in ticks if t.skip_reason), "") or ""
        time.sleep(3)
    assert re.search(r"nothing to predict in .*again \(\d+ duplicates\)", said), said
    assert re.search(r"junk \(4 bad files\)", said), said
    assert "study CSV up to date" in said, said
    runs = instance.get_run_records()
    assert runs and all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in runs), [
        (r.dagster_run.job_name, r.dagster_run.status) for r in runs
    ]
    ingested = {r.dagster_run.tags.get("dagster/partition") for r in runs
                if r.dagster_run.job_name == "ingest_drop"}  # fmt: skip
    assert ingested == {"fresh", "again", "junk"}  # d1 was indexed already: not again
    console = dev.log.read_text()  # what `make dev` shows a user (item 7: no noise)
    for noise in ("will not be used", "SupersessionWarning", "FutureWarning"):
        assert noise not in console, (noise, console[-2000:])


def _shot(page, dev: Dev, name: str) -> Path:
    """A full-page screenshot kept as a test artifact; asserted to show something."""
    path = dev.artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as im:
        gray = np.asarray(im.convert("L"), np.float32)
    assert gray.shape[1] == page.viewport_size["width"] and gray.std() > 5, name
    return path


def _cut_tables(page) -> list[str]:
    """Markdown tables inside metadata values that do not fit in view: a column cut off
    by the panel that scrolls them (what the UI showed of the twelve-column metrics)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('table table')].filter(t => {
            const box = t.getBoundingClientRect();
            if (!box.width) return false;
            let p = t.parentElement;
            while (p && p !== document.body && getComputedStyle(p).overflowX === 'visible')
              p = p.parentElement;
            const right = p ? p.getBoundingClientRect().left + p.clientWidth : innerWidth;
            return box.right > Math.min(right, innerWidth) + 1;
          }).map(t => t.innerText.slice(0, 60))"""
    )


def test_walk_the_ui_and_the_labeler(dev: Dev, browser) -> None:
    """Asset pages, Automation, then review mode with g: what a new user sees, kept as
    screenshots and checked (after the drops above: their checks and skip reasons)."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(60_000)
    ui = dev.dagster
    # the model's page: numeric metadata (plotted across versions), the metrics whole
    page.goto(f"{ui}/assets/trained_model")
    page.get_by_text("holdout_mag_accuracy").first.wait_for()
    assert not page.get_by_text("Join the Dagster community").count()  # nux off
    for key in ("threshold_biopsy", "threshold_mag", "best_epoch", "training_seconds"):
        assert page.get_by_text(key, exact=True).count(), key
    page.get_by_text("metrics_holdout", exact=True).scroll_into_view_if_needed()
    page.locator("table table").nth(2).wait_for()  # Dagster renders markdown lazily
    _shot(page, dev, "01_trained_model_overview")
    assert page.locator("table table").count() >= 3  # metrics per split, confusion
    assert not _cut_tables(page), _cut_tables(page)
    page.get_by_text("Plots", exact=True).first.click()
    page.get_by_text("holdout_mag_accuracy").first.wait_for()
    _shot(page, dev, "02_trained_model_plots")
    page.goto(f"{ui}/assets/trained_model?view=events")
    page.get_by_text("metrics_validation", exact=True).first.wait_for()
    _shot(page, dev, "03_trained_model_events")
    assert not _cut_tables(page), _cut_tables(page)
    # a drop with nothing new: its WARN check says so
    page.goto(f"{ui}/assets/dicom_index?view=checks")
    page.get_by_text("has_new_frames").first.click()
    page.get_by_text("Execution history").first.click()
    d1 = read_ground_truth(dev.home / "synthetic" / "d1_ground_truth.csv")
    for drop, what in (("again", f"{len(d1)} duplicate frames"), ("junk", "4 bad files")):
        page.get_by_text(f"nothing new in drop {drop}:").first.wait_for()
        assert what in page.get_by_text(f"nothing new in drop {drop}:").first.inner_text()
    _shot(page, dev, "04_dicom_index_has_new_frames")
    page.goto(f"{ui}/assets/gradcam?view=events")
    page.get_by_text("heatmaps").first.wait_for()
    assert "//.png" not in page.inner_text("body")
    _shot(page, dev, "05_gradcam_events")
    # Automation: the sensors run by default; the CSV's sensor says why it skipped drops
    page.goto(f"{ui}/automation")
    for name in ("dicom_drop_sensor", "new_model_sensor", "active_learning_sensor"):
        page.get_by_text(name).first.wait_for()
    _shot(page, dev, "06_automation")
    page.goto(f"{ui}/locations/mammo_dagster/sensors/new_model_sensor")
    skipped = page.locator("button", has_text="0 runs requested")  # a tick's result
    skipped.first.click()
    page.get_by_text("Skip reason:").first.wait_for()
    reason = page.get_by_role("dialog").inner_text()
    assert re.search(r"Skip reason: study CSV up to date .*nothing to predict in again", reason)
    page.get_by_role("button", name="Close").wait_for()
    page.wait_for_timeout(500)  # the dialog fades in: a screenshot a person can read
    _shot(page, dev, "07_new_model_sensor_skip_reason")

    # the labeler's review mode: g shows the overlay at once, or says it is computing
    page.goto(f"{dev.labeler}/review")
    page.fill("input[name=annotator]", "walker")
    page.press("input[name=annotator]", "Enter")
    page.wait_for_function("document.querySelector('#stage')?.dataset.id")
    page.wait_for_function("document.querySelector('#stage img')?.complete")
    pred = page.inner_text("#pred")
    assert re.search(r"biopsy \d\.\d+ [<≥] \d\.\d+", pred) and re.search(r"mag \d\.\d+", pred)
    bar = page.evaluate("document.querySelector('#bar').getBoundingClientRect().height")
    _shot(page, dev, "08_review")
    t0 = time.monotonic()
    page.keyboard.press("g")
    page.wait_for_function(
        "document.querySelector('#stage img')?.src.includes('/cam?')"
        " || document.querySelector('#pred').textContent.includes('(computing…)')",
        timeout=1000,
    )
    waited = time.monotonic() - t0
    _shot(page, dev, "09_review_g_pressed")
    page.wait_for_function("document.querySelector('#stage img')?.src.includes('/cam?')")
    page.wait_for_function("!document.querySelector('#pred').textContent.includes('computing')")
    _shot(page, dev, "10_review_gradcam")
    assert waited < 1.0
    assert page.evaluate("document.querySelector('#stage img').naturalWidth") > 0
    assert "Grad-CAM: " in page.inner_text("#pred")
    now = page.evaluate("document.querySelector('#bar').getBoundingClientRect().height")
    assert now == bar  # the bar keeps its height: the image does not move
    shots = sorted(p.name for p in dev.artifacts.glob("*.png"))
    assert len(shots) == 10, shots
