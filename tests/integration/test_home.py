"""The data folder has one owner: keys, paths and settings come from the Home a tool was
given, never from $MAMMO_HOME or ./data behind its back (issue 17)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from mammo_dagster.core.imaging.header import patient_key
from mammo_dagster.core.store.db import Store
from mammo_dagster.defs.ingest import dicom_index
from mammo_dagster.defs.resources import resources_for
from tests.factory import FAKE_PATIENT_ID, make_file


def test_ingest_keys_patients_with_the_salt_of_the_home_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unsalted: Path, drops_instance
) -> None:
    """`MammoHome(home=X)` (and so `mammo demo --home X`) keys patients with X's salt,
    not with the salt of $MAMMO_HOME or ./data: the patient split is X's own."""
    elsewhere, home = unsalted, tmp_path / "home"
    monkeypatch.chdir(tmp_path)
    make_file(home / "incoming" / "d1" / "a.dcm", np.full((64, 48), 1500, np.uint16), "ge")
    result = dg.materialize(
        [dicom_index], partition_key="d1", instance=drops_instance("d1"),
        resources=resources_for(home),
    )  # fmt: skip
    assert result.success
    assert not elsewhere.exists() and not (tmp_path / "data").exists()
    salt = (home / ".patient_salt").read_text().strip()
    keys = Store(home / "mammo.duckdb").run(
        lambda c: c.execute("SELECT patient_key FROM dicom_index").fetchall(), read_only=True
    )
    assert keys == [(patient_key(FAKE_PATIENT_ID, salt),)]


@pytest.mark.parametrize("command", ["thumbnail", "inspect", "thumbnails"])
def test_commands_without_a_data_folder_create_nothing_in_the_working_directory(
    tmp_path: Path, command: str
) -> None:
    """`mammo thumbnail`, `inspect` and `thumbnails` to an output folder need no data
    folder: they must leave no `./data/.patient_salt` (or anything else) behind."""
    src = make_file(tmp_path / "in" / "a.dcm", np.full((64, 48), 1500, np.uint16), "ge")
    work = tmp_path / "work"
    work.mkdir()
    out = {"thumbnail": [str(src), str(tmp_path / "a.png")], "inspect": [str(src)],
           "thumbnails": [str(src.parent), str(tmp_path / "thumbs")]}[command]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("MAMMO_HOME", "MAMMO_PATIENT_SALT")}
    res = subprocess.run(
        [sys.executable, "-m", "mammo_dagster.cli", "-q", command, *out],
        capture_output=True, text=True, cwd=work, env=env, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        {"in", "work"} | {Path(o).name for o in out[1:] if not o.endswith(".dcm")}
    )
