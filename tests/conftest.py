"""Fixtures every test level shares: each test runs against its own MAMMO_HOME with a
fixed salt (`unsalted` takes the salt away); tests that train a model are marked."""

from __future__ import annotations

import warnings
from pathlib import Path

import anyio._core._fileio  # noqa: F401  (see below)
import pytest

# Starlette's TestClient serves files through anyio.open_file, which anyio imports lazily,
# in its worker thread; pytest rewrites anyio's modules (anyio is a pytest plugin), and
# CPython 3.11's ast.parse there can fail with "AST constructor recursion depth
# mismatch" depending on which tests ran before. Imported here, in the main thread, once.

#: Fixtures that train a model: the tests using them get the `training` marker.
TRAINING_FIXTURES = {"trained"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.training)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path_factory.mktemp("mammo_home")
    monkeypatch.setenv("MAMMO_HOME", str(home))
    # `make test` exports DAGSTER_HOME (the developer's instance, ./data/dagster): runs a
    # test starts belong in the test's own home, not in the Dagster UI a developer uses.
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("MAMMO_PATIENT_SALT", "test-salt")
    warnings.filterwarnings("ignore", module="pydicom")
    return home


@pytest.fixture
def unsalted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No site secret (what a real install has): each data folder keeps its own salt.
    $MAMMO_HOME points at a folder no test should touch; returns it."""
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.delenv("MAMMO_PATIENT_SALT", raising=False)
    monkeypatch.setenv("MAMMO_HOME", str(elsewhere))
    return elsewhere
