"""The `mammo` commands' own paths that tests/test_cli.py doesn't walk: model lookup of
`predict`, `weights import` without a file, `inspect --fast`, the parser's command list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mammo_dagster.cli import build_parser, main
from tests.factory import make_file


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["-q", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_command_is_on_the_parser() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == [
        "synth", "inspect", "thumbnail", "thumbnails", "demo", "label", "predict", "dev",
        "labels", "weights", "pacs",
    ]  # fmt: skip


def test_predict_says_what_to_do_without_a_model(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "dicoms"
    folder.mkdir()
    code, out, err = _run(capsys, "predict", "--input-dir", str(folder), "--output",
                          str(tmp_path / "s.csv"), "--home", str(tmp_path / "home"))  # fmt: skip
    assert code == 1 and out == ""
    assert err == (
        f"mammo predict: no current model in {tmp_path / 'home' / 'models'}: train one "
        "(Dagster: materialize onnx_model), or pass --model PATH\n"
    )
    (tmp_path / "m0001").mkdir()
    code, _, err = _run(capsys, "predict", "--input-dir", str(folder), "--output",
                        str(tmp_path / "s.csv"), "--model", str(tmp_path / "m0001"))  # fmt: skip
    assert (
        code == 1 and err == f"mammo predict: --model {tmp_path / 'm0001'}: no ONNX model there\n"
    )
    assert not (tmp_path / "s.csv").exists()


def test_weights_import_needs_the_file(capsys) -> None:
    code, _, err = _run(capsys, "weights", "import")
    assert code == 1
    assert err == "mammo weights: import needs the weights file: mammo weights import FILE\n"


def test_inspect_fast_decodes_every_frame(tmp_path: Path, capsys) -> None:
    import json

    src = make_file(tmp_path / "a.dcm", np.full((64, 48), 1500, np.uint16), "ge")
    code, out, _ = _run(capsys, "inspect", "--fast", str(src))
    report = json.loads(out)
    assert code == 0 and report["status"] == "ok"
    assert [f["status"] for f in report["frames"]] == ["ok"]
    assert report["facts"]["patient_key"]  # the test salt exists: the index's key is shown
