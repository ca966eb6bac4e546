"""Resources, configured in one place: both wrap the core's `Home` (the data folder)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from mammo_dagster.core.home import Home
from mammo_dagster.core.store.db import Store


class MammoHome(dg.ConfigurableResource):
    """The data folder: ``$MAMMO_HOME`` (default ``./data``) unless `home` is set; the
    retrain threshold ``$MAMMO_RETRAIN_EVERY`` (default 50) unless `retrain_every` is."""

    home: str = ""
    retrain_every: int = 0  # 0: from the environment

    @property
    def data(self) -> Home:
        """The core's view of this data folder (layout, settings, patient-key salt)."""
        return Home.from_env(self.home or None, retrain_every=self.retrain_every or None)


class StoreResource(dg.ConfigurableResource):
    """The DuckDB store (default: the data folder's, ``$MAMMO_HOME/mammo.duckdb``),
    schema migrated on use."""

    path: str = ""

    def store(self) -> Store:
        store = Store(Path(self.path) if self.path else Home.from_env().db)
        store.migrate()
        return store


class PacsResource(dg.ConfigurableResource):
    """The DICOMweb source: `url`, else ``$MAMMO_DICOMWEB_URL``; credentials and TLS
    settings always from the environment (``$MAMMO_DICOMWEB_TOKEN`` or
    ``$MAMMO_DICOMWEB_USER``/``$MAMMO_DICOMWEB_PASSWORD``, see core/pacs/pull.py)."""

    url: str = ""
    #: the sensor and `pacs_studies` search StudyDate from this many days ago on (0: all
    #: dates): a hospital archive is not listed whole every few minutes
    lookback_days: int = 7

    @property
    def since(self) -> str | None:
        """The StudyDate lower bound (YYYYMMDD) the lookback gives, None for all dates."""
        from datetime import date, timedelta

        if self.lookback_days <= 0:
            return None
        return (date.today() - timedelta(days=self.lookback_days)).strftime("%Y%m%d")

    @property
    def configured(self) -> bool:
        from mammo_dagster.core.pacs.source import ENV_URL

        return bool(self.url or os.environ.get(ENV_URL))

    def source(self):
        """The core's `PacsSource` (raises PacsError when none is configured)."""
        from mammo_dagster.core.pacs.source import PacsSource

        return PacsSource.from_env(self.url or None)


def resources_for(home: Home | Path) -> dict:
    """Both resources on one data folder (scripts, the demo, tests), not $MAMMO_HOME."""
    home = Home.of(home)
    return {
        "paths": MammoHome(home=str(home.root), retrain_every=home.retrain_every),
        "store": StoreResource(path=str(home.db)),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={"paths": MammoHome(), "store": StoreResource(), "pacs": PacsResource()}
    )
