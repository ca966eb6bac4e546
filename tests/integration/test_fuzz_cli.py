"""The fuzzing corpus through the command lines and the Dagster ingest: every mutant is
a row (or one line), never a traceback, a crash, a hang, or a good file lost."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mammo_dagster.core.imaging.dicom import Failure
from mammo_dagster.defs.ingest import dicom_index, thumbnails
from mammo_dagster.defs.resources import MammoHome, StoreResource
from tests.fuzz import make_corpus

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = 300
KINDS = {f.value for f in Failure}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("fuzz") / "drop"
    seeds, mutants = make_corpus(folder, MUTANTS, seed=18)  # and the known hostile files
    known = list((folder / "known").iterdir())
    files = sorted(str(p.relative_to(folder)) for p in seeds + [m.path for m in mutants] + known)
    return folder, [str(s.relative_to(folder)) for s in seeds], files


def mammo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mammo_dagster.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        timeout=600,
    )


def _clean(text: str | None) -> bool:
    return not text or ("\n" not in text.strip() and "Traceback" not in text)


def test_mammo_thumbnails(tmp_path: Path, corpus) -> None:
    folder, seeds, files = corpus
    out = mammo("thumbnails", "-q", str(folder), str(tmp_path / "t"), "--size", "64")
    assert out.returncode == 0 and out.stderr == ""
    rows = list(csv.DictReader((tmp_path / "t" / "thumbnails.csv").open()))
    assert sorted({r["path"] for r in rows}) == files
    for r in rows:
        assert r["status"] in ("ok", "error") and _clean(r["error"]) and _clean(r["warnings"])
        assert r["status"] == "ok" or r["error_kind"] in KINDS
    assert all(r["status"] == "ok" and not r["warnings"] for r in rows if r["path"] in seeds)


def test_mammo_inspect(corpus) -> None:
    folder, _seeds, files = corpus
    out = mammo("inspect", "--fast", *files, cwd=folder)
    assert out.returncode == 1 and out.stderr == ""  # 1: some file gives no image
    reports = json.loads(out.stdout)
    assert [r["path"] for r in reports] == files
    for r in reports:
        assert r["status"] in ("ok", "error") and _clean(r.get("error"))
        assert r["status"] == "ok" or r["error_kind"] in KINDS


def test_mammo_thumbnail(tmp_path: Path, corpus) -> None:
    folder, _seeds, files = corpus
    for i, name in enumerate(files[::12]):
        path = folder / name
        out = mammo("thumbnail", str(path), str(tmp_path / f"{i}.png"), "--size", "64")
        if out.returncode == 0:
            assert out.stderr == "", name
        else:
            assert out.returncode == 1, name
            line = out.stderr.removesuffix("\n")
            assert "\n" not in line and "Traceback" not in line, name
            kind = line.removeprefix(f"mammo thumbnail: {path}: ").split(":")[0]
            assert kind in KINDS, line


def _tiny_model(folder: Path) -> Path:
    """An ONNX model that needs no training: the mean gray level, twice, through a
    sigmoid, with a card (rendering contract v4, 32 px)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Concat", ["flat", "flat"], ["both"], axis=1),
            helper.make_node("Sigmoid", ["both"], ["probs"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    card = {"version": "fuzz", "input_size": 32, "preprocessing": {"render": "4"}}
    (folder / "card.json").write_text(json.dumps(card))
    return folder / "model.onnx"


def test_mammo_predict(tmp_path: Path, corpus) -> None:
    folder, seeds, files = corpus
    model = _tiny_model(tmp_path / "model")
    output = tmp_path / "out" / "studies.csv"
    args = ("predict", "-q", "--input-dir", str(folder), "--output", str(output))
    out = mammo(*args, "--model", str(model))
    assert out.returncode == 0, out.stderr
    assert out.stderr == f"model: {model}\n"
    images = list(csv.DictReader(output.with_name("studies.csv.images.csv").open()))
    errors = list(csv.DictReader(output.with_name("studies.csv.errors.csv").open()))
    assert sorted({r["path"] for r in images} | {r["path"] for r in errors}) == files
    assert set(seeds) <= {r["path"] for r in images}  # no good file lost
    assert not {r["path"] for r in errors} & set(seeds)
    assert all(r["error_kind"] in KINDS and _clean(r["error"]) for r in errors)
    assert all(_clean(r["warnings"]) for r in images)


def test_dagster_ingest(tmp_path: Path, corpus, drops_instance) -> None:
    folder, seeds, files = corpus
    home = tmp_path / "home"
    (home / "incoming").mkdir(parents=True)
    (home / "incoming" / "fuzz").symlink_to(folder, target_is_directory=True)
    result = dg.materialize(
        [dicom_index, thumbnails],
        partition_key="fuzz",
        instance=drops_instance("fuzz"),
        resources={
            "paths": MammoHome(home=str(home)),
            "store": StoreResource(path=str(home / "mammo.duckdb")),
        },
        run_config={"ops": {"thumbnails": {"config": {"size": 64, "workers": 2}}}},
    )
    assert result.success
    index_md = result.asset_materializations_for_node("dicom_index")[0].metadata
    assert index_md["files"].value == len(files)
    thumbs_md = result.asset_materializations_for_node("thumbnails")[0].metadata
    assert thumbs_md["rendered"].value >= sum(2 if "2frames" in s else 1 for s in seeds)
    assert thumbs_md["failed"].value > 0  # headers that read but pixels that don't
    assert thumbs_md["rendered_with_warnings"].value > 0
