"""The `mammo` command line as a user runs it: a real subprocess, exit codes, stderr."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammo_dagster.core.imaging.display import VIEWING_LUT
from mammo_dagster.core.store.db import DB_NAME, Store
from mammo_dagster.core.store.labels import load_events
from tests.factory import FAKE_PATIENT_ID, FAKE_PATIENT_NAME, make_file

COMMANDS = ["synth", "inspect", "thumbnail", "thumbnails", "demo"]


def mammo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mammo_dagster.cli", "-q", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ.copy(),
        timeout=300,
    )


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "mammo"
    assert script.exists()
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for cmd in COMMANDS:
        assert cmd in out.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_everywhere(cmd: str) -> None:
    out = mammo(cmd, "--help")
    assert out.returncode == 0 and "usage: mammo" in out.stdout and out.stderr == ""


def test_synth_realism_options(tmp_path: Path) -> None:
    out = mammo("synth", str(tmp_path / "a"), "--studies", "1", "--seed", "3",
                "--shift", "metal-low", "--distractors", "letters", "--declared-bits", "16",
                "--transfer-syntax", "j2k-lossy")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert ("realism: metal at 0.85-0.95, letters in every image, BitsStored 16 declared; "
            "syntaxes j2k-lossy") in out.stdout  # fmt: skip
    with (tmp_path / "a_ground_truth.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["transfer_syntax"] for r in rows} == {"1.2.840.10008.1.2.4.91"}
    assert any("letters" in r["marker_kind"] for r in rows)
    bad = mammo("synth", str(tmp_path / "b"), "--metal-level", "0.9-0.8")
    assert bad.returncode != 0 and bad.stdout == ""
    assert bad.stderr.strip() == (
        "mammo synth: --metal-level must satisfy 0.5 <= lo <= hi <= 1, got 0.9-0.8"
    )


def test_synth_inspect_thumbnail(tmp_path: Path) -> None:
    out = mammo("synth", str(tmp_path / "arch"), "--studies", "2", "--seed", "3")
    assert out.returncode == 0, out.stderr
    assert f"ground truth: {tmp_path / 'arch_ground_truth.csv'}; seed 3" in out.stdout
    with (tmp_path / "arch_ground_truth.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert 8 <= len(rows) <= 16
    first = tmp_path / rows[0]["path"]

    out = mammo("inspect", str(first))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["status"] == "ok"
    assert report["facts"]["sop_instance_uid"] == rows[0]["sop_instance_uid"]
    assert report["frames"][0]["status"] == "ok"
    assert rows[0]["patient_id"] not in out.stdout  # the synthetic patient ID never shows

    png = tmp_path / "t.png"
    out = mammo("thumbnail", str(first), str(png), "--size", "224")
    assert out.returncode == 0, out.stderr
    assert Image.open(png).size == (224, 224)
    assert "the model's thumbnail" in out.stdout
    seen = tmp_path / "seen.png"
    out = mammo("thumbnail", str(first), str(seen), "--size", "224", "--view")
    assert out.returncode == 0 and "the radiologist's rendering" in out.stdout, out.stderr
    model = np.asarray(Image.open(png).convert("L"))
    assert np.array_equal(np.asarray(Image.open(seen)), VIEWING_LUT[model])


def test_synth_into_a_drop_makes_fresh_uids_and_keeps_its_truth_out(tmp_path: Path) -> None:
    """Issue 19: `mammo synth` into a drop must not copy the demo (seed 0's UIDs) nor
    leave its ground truth in the drop, where ingest would index it as a bad file."""
    home = tmp_path / "home"
    seeds, uids = [], []
    for name in ("d1", "d2"):
        out = mammo("synth", str(home / "incoming" / name), "--studies", "1")
        assert out.returncode == 0, out.stderr
        seeds.append(re.search(r"seed (\d+) \(--seed \1 makes it again\)", out.stdout).group(1))
        truth = home / "synthetic" / f"{name}_ground_truth.csv"
        assert f"ground truth: {truth}" in out.stdout
        with truth.open() as f:
            rows = list(csv.DictReader(f))
        assert rows and all(Path(r["path"]).is_file() for r in rows)
        uids.append({r["sop_instance_uid"] for r in rows})
        assert not list((home / "incoming" / name).rglob("*.csv"))
    assert seeds[0] != seeds[1] and not uids[0] & uids[1]
    demo = mammo("synth", str(tmp_path / "demo"), "--studies", "1", "--seed", "0")
    with (tmp_path / "demo_ground_truth.csv").open() as f:
        assert not {r["sop_instance_uid"] for r in csv.DictReader(f)} & (uids[0] | uids[1])
    assert demo.returncode == 0


def test_synth_mix_reaches_the_generator(tmp_path: Path) -> None:
    from mammo_dagster.core.synthetic.plan import plan_labels

    out = mammo("synth", str(tmp_path / "a"), "--studies", "3", "--seed", "5", "--mix", "screening")
    assert out.returncode == 0, out.stderr
    with (tmp_path / "a_ground_truth.csv").open() as f:
        rows = list(csv.DictReader(f))
    plan = plan_labels(studies=3, seed=5, mix="screening")
    assert plan != plan_labels(studies=3, seed=5)  # the mixes differ for this seed
    assert [r["has_mag_view"] == "1" for r in rows] == [p["has_mag_view"] for p in plan]
    assert [r["has_biopsy_tool"] == "1" for r in rows] == [p["has_biopsy_tool"] for p in plan]
    out = mammo("synth", str(tmp_path / "b"), "--mix", "icu")
    assert out.returncode == 2 and "invalid choice: 'icu'" in out.stderr


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 10 + b"not a dicom at all" * 20)
    out = mammo("thumbnail", str(junk), str(tmp_path / "x.png"))
    assert out.returncode != 0
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "not_dicom" in out.stderr and "junk.dcm" in out.stderr
    assert not (tmp_path / "x.png").exists()

    out = mammo("inspect", str(junk), str(tmp_path / "missing.dcm"))
    assert out.returncode == 1
    reports = json.loads(out.stdout)
    assert [r["error_kind"] for r in reports] == ["not_dicom", "unreadable"]

    out = mammo("synth", str(tmp_path / "a"), "--studies", "0")
    assert out.returncode == 2 and "--studies: must be between 1 and" in out.stderr


def test_outputs_are_checked_before_any_work(tmp_path: Path) -> None:
    src = make_file(tmp_path / "a.dcm", np.full((64, 48), 1500, np.uint16), "ge")
    (tmp_path / "adir").mkdir()
    for out, words in [
        (tmp_path / "adir", "not a regular file"),
        (tmp_path / "x.jpg", "must be a .png file"),
        (Path("/dev/null"), "not a regular file"),
    ]:
        res = mammo("thumbnail", str(src), str(out))
        assert res.returncode == 1 and words in res.stderr, res.stderr
        assert (
            res.stderr.count("\n") == 1 and "Errno" not in res.stderr and ".tmp" not in res.stderr
        )
    assert Path("/dev/null").is_char_device()

    res = mammo("synth", str(tmp_path / "adir"), "--studies", "1")
    assert res.returncode == 0, res.stderr  # an empty folder is fine
    res = mammo("synth", str(tmp_path / "adir"), "--studies", "1")
    assert res.returncode == 1 and "not empty" in res.stderr
    res = mammo("thumbnails", str(tmp_path / "adir"), str(src))
    assert res.returncode == 1 and "not a folder" in res.stderr


def test_thumbnails_inside_the_folder_and_permissions(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    make_file(drop / "IM1", np.full((64, 48), 1500, np.uint16), "ge")
    old = os.umask(0o022)
    try:
        for _ in range(2):  # the second run must not read its own PNGs and CSV as input
            res = mammo("thumbnails", str(drop), str(drop / "thumbs"), "--size", "32", "-q")
            assert res.returncode == 0, res.stderr
            assert "1 frame from 1 file" in res.stdout
    finally:
        os.umask(old)
    png = next((drop / "thumbs").glob("*.png"))
    assert png.stat().st_mode & 0o777 == 0o644


def test_thumbnails_folder_with_bad_files_and_resume(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    px = np.full((64, 48), 1500, dtype=np.uint16)
    make_file(drop / "p1" / "s1" / "IM0001", px, "ge", "explicit", tag="a")
    make_file(drop / "p1" / "s1" / "IM0002.dcm", px, "hologic", "j2k", tag="b")
    (drop / "p1" / "DICOMDIR.txt").write_text("index")
    (drop / "empty").write_bytes(b"")
    out = mammo("thumbnails", str(drop), str(tmp_path / "thumbs"), "--size", "64", "--workers", "2")
    assert out.returncode == 0, out.stderr
    assert "ok 2" in out.stdout and "error 2" in out.stdout
    with (tmp_path / "thumbs" / "thumbnails.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["status"] for r in rows) == ["error", "error", "ok", "ok"]
    assert FAKE_PATIENT_ID not in (tmp_path / "thumbs" / "thumbnails.csv").read_text()
    assert FAKE_PATIENT_NAME not in out.stdout + out.stderr
    pngs = sorted((tmp_path / "thumbs").glob("*.png"))
    assert len(pngs) == 2

    # a rerun resumes: finished thumbnails are kept, not redone
    pngs[0].unlink()
    out = mammo("thumbnails", str(drop), str(tmp_path / "thumbs"), "--size", "64")
    assert "cached 1" in out.stdout and "ok 1" in out.stdout
    assert len(list((tmp_path / "thumbs").glob("*.png"))) == 2


def test_demo_turn_table_counts_misses_and_false_alarms_of_the_flags(capsys) -> None:
    from mammo_dagster.cli import _flag_summary, _print_loop

    y = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    p = np.array([0.9, 0.6, 0.4, 0.7, 0.2, 0.1, 0.05, 0.3])
    flagged = p >= 0.25  # the model's threshold
    acc, auc, missed, false = _flag_summary(y, p, flagged)
    assert acc == pytest.approx(6 / 8)  # at p >= 0.5: the 0.4 positive and the 0.7 negative
    assert auc == pytest.approx(13 / 15) and (missed, false) == (0, 2)
    assert _flag_summary(y, p, p >= 0.65)[2:] == (2, 1)
    nothing = _flag_summary(np.zeros(0, bool), np.zeros(0), np.zeros(0, bool))
    assert np.isnan(nothing[0]) and nothing[1:] == (None, 0, 0)
    _print_loop([("m0001", 100, {"biopsy": (acc, auc, missed, false), "mag": nothing}, 8),
                 ("m0002", 150, {}, 0)])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["m0001", "100", "8", "|", "75.0%", "0.867", "0", "2", "|",
                                "nan%", "nan", "0", "0"]  # fmt: skip
    assert lines[3].split()[:4] == ["m0002", "150", "0", "|"]


def test_demo_study_score_shows_false_alarms(tmp_path: Path, capsys) -> None:
    """Issue 19: "74/100 studies right, 0 missed" hid 26 false alarms."""
    from types import SimpleNamespace

    from mammo_dagster.cli import _score

    truth = [SimpleNamespace(study_instance_uid=s, has_biopsy_tool=b, has_mag_view=m)
             for s, b, m in [("s1", True, False), ("s2", False, False), ("s3", False, True),
                             ("s4", False, False)]]  # fmt: skip
    out = tmp_path / "studies.csv"
    out.write_text("study_id,has_biopsy_tool,has_mag_view\ns1,0,1\ns2,1,1\ns3,0,1\ns4,0,0\n")
    _score(out, truth)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("  biopsy: 2/4 studies right (50%): 1 of 1 studies with one missed, "
                        "1 of 3 without one flagged (false alarms)")  # fmt: skip
    assert lines[1] == ("  mag: 2/4 studies right (50%): 0 of 1 studies with one missed, "
                        "2 of 3 without one flagged (false alarms)")  # fmt: skip


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    tiny = ["--studies", "12", "--labels", "20", "--rounds", "2", "--per-round", "10"]
    tiny += ["--epochs", "1", "--input-size", "64"]
    out = mammo("demo", "--home", str(tmp_path / "home"), *tiny)
    assert out.returncode == 0, out.stderr
    thumbs = tmp_path / "home" / "thumbnails"
    assert str(thumbs) in out.stdout
    with (tmp_path / "home" / "synthetic" / "demo_ground_truth.csv").open() as f:
        truth = list(csv.DictReader(f))
    n = len(truth)
    assert len(list(thumbs.glob("*.png"))) == n
    assert f"dicom_index: {n} frames" in out.stdout and "unique_sop_uids passed" in out.stdout
    # the loop turned three times: labels through the labeler's API, the sensor fired,
    # the new model predicted every drop, and the next labels came from its queue
    assert "turn 1: labels: 20 images labeled" in out.stdout
    for turn, seq in ((2, 30), (3, 40)):
        assert re.search(rf"turn {turn}: labels: 10 images labeled .*\([^)]*\d queue", out.stdout)
        assert f"active_learning_sensor -> retrain (retrain-labels-{seq}): ok" in out.stdout
    for version in ("m0001", "m0002", "m0003"):
        assert re.search(
            rf"new_model_sensor -> predict_drop\[demo\] \({version}:demo:[0-9a-f]{{8}}\): ok",
            out.stdout,
        )
    # the turn-by-turn table: one row per model, scored on the same hold-out images
    assert "biopsy acc   AUC missed false |    mag acc   AUC missed false" in out.stdout
    flag = r"\s+([\d.]+)%\s+(\S+)\s+(\d+)\s+(\d+)"
    rows = re.findall(rf"^  (m000\d)\s+(\d+)\s+(\d+) \|{flag} \|{flag}$", out.stdout, re.M)
    assert [(r[0], int(r[1])) for r in rows] == [("m0001", 20), ("m0002", 30), ("m0003", 40)]
    assert len({r[2] for r in rows}) == 1 and int(rows[0][2]) > 0
    for r in rows:
        images = int(r[2])
        for acc, auc, missed, false in (r[3:7], r[7:11]):
            assert 0 <= float(acc) <= 100 and int(missed) + int(false) <= images
            assert auc == "nan" or 0 <= float(auc) <= 1
    events = load_events(Store(tmp_path / "home" / DB_NAME))
    assert len(events) == 40 and {e.annotator for e in events} == {"demo-labeler"}
    assert "onnx_matches_pytorch passed" in out.stdout and "current: True" in out.stdout
    study_csv = tmp_path / "home" / "predictions" / "study_predictions.csv"
    assert f"study CSV: {study_csv}" in out.stdout
    for flag in ("biopsy", "mag"):  # right + missed + false alarms account for every study
        pattern = (rf"{flag}: (\d+)/12 studies right \(\d+%\): (\d+) of (\d+) studies "
                   r"with one missed, (\d+) of (\d+) without one flagged")  # fmt: skip
        m = re.search(pattern, out.stdout)
        assert m, out.stdout
        right, missed, pos, false, neg = map(int, m.groups())
        assert right + missed + false == 12 and pos + neg == 12
    shown = out.stdout + out.stderr + study_csv.read_text()
    assert not any(row["patient_id"] in shown for row in truth)
    again = mammo("demo", "--home", str(tmp_path / "home"), *tiny)
    assert again.returncode == 0, again.stderr
    assert f"thumbnails: 0 rendered, {n} cached" in again.stdout
    assert "labels:" not in again.stdout  # the labels were kept, not added twice


def test_weights_import_checks_the_file_and_fills_the_cache(tmp_path: Path, monkeypatch) -> None:
    import torch
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = mammo("weights", "status")
    assert out.returncode == 0 and "no ImageNet ResNet18 weights" in out.stdout
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    out = mammo("weights", "import", str(bad))
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "is not a torchvision ResNet18 with 1000 classes" in out.stderr
    good = tmp_path / "r18.pth"
    torch.save(resnet18(weights=None).state_dict(), good)  # ImageNet's shape (random values)
    out = mammo("weights", "import", str(good))
    assert out.returncode == 0, out.stderr
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert cached.exists() and str(cached) in out.stdout
    assert str(cached) in mammo("weights", "status").stdout
    # training finds them offline: the pretrained network builds from the cache
    from mammo_dagster.core.model.network import network

    net = network(pretrained=True, second_look=False)  # TORCH_HOME points at the cache
    first = net[0][0][1]  # the first convolution, behind the metal channel
    rgb = torch.load(cached, weights_only=True)["conv1.weight"]
    torch.testing.assert_close(first.weight[:, 0], rgb.sum(dim=1))
