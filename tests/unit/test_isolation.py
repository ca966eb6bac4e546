"""Every test runs against a home of its own (tests/conftest.py), Dagster's instance too."""

from __future__ import annotations

import os
from pathlib import Path

from mammo_dagster.core.home import Home


def test_a_tests_dagster_runs_stay_in_its_own_home() -> None:
    """`make test` exports DAGSTER_HOME=./data/dagster, the instance a developer's Dagster
    UI shows: runs that tests start (the demo, the pipeline) must not land there."""
    home = Home.from_env()
    assert home.root == Path(os.environ["MAMMO_HOME"]).resolve()
    assert home.dagster.is_relative_to(home.root)
