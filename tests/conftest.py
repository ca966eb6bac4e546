"""Shared fixtures: every test runs against its own MAMMO_HOME and a fixed salt."""

from __future__ import annotations

import warnings

import anyio._core._fileio  # noqa: F401  (see below)
import pytest

# Starlette's TestClient serves files through anyio.open_file, which anyio imports lazily,
# in its worker thread; pytest rewrites anyio's modules (anyio is a pytest plugin), and
# CPython 3.11's ast.parse there can fail with "AST constructor recursion depth
# mismatch" depending on which tests ran before. Imported here, in the main thread, once.


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path_factory.mktemp("mammo_home")
    monkeypatch.setenv("MAMMO_HOME", str(home))
    monkeypatch.setenv("MAMMO_PATIENT_SALT", "test-salt")
    warnings.filterwarnings("ignore", module="pydicom")
    return home
