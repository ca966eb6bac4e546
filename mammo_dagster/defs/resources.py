"""Resources, configured in one place. Every path derives from one data folder."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mammo_dagster.core.config import mammo_home
from mammo_dagster.core.store import DB_NAME, Store


class MammoHome(dg.ConfigurableResource):
    """The data folder: ``$MAMMO_HOME`` (default ``./data``) unless `home` is set."""

    home: str = ""

    @property
    def root(self) -> Path:
        return Path(self.home).expanduser().resolve() if self.home else mammo_home()

    @property
    def incoming(self) -> Path:
        """Drops: one folder per drop below it."""
        return self.root / "incoming"

    @property
    def thumbnails(self) -> Path:
        return self.root / "thumbnails"

    @property
    def models(self) -> Path:
        """The versioned model store: <version>/ folders and current.json."""
        return self.root / "models"

    @property
    def training_sets(self) -> Path:
        return self.root / "training_sets"

    @property
    def predictions(self) -> Path:
        """Where the study CSV goes."""
        return self.root / "predictions"


class StoreResource(dg.ConfigurableResource):
    """The DuckDB store (default ``$MAMMO_HOME/mammo.duckdb``), schema migrated on use."""

    path: str = ""

    def store(self) -> Store:
        store = Store(Path(self.path) if self.path else mammo_home() / DB_NAME)
        store.migrate()
        return store


def resources_for(home: Path) -> dict:
    """Both resources on one data folder (scripts, the demo, tests), not $MAMMO_HOME."""
    return {"paths": MammoHome(home=str(home)), "store": StoreResource(path=str(home / DB_NAME))}


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"paths": MammoHome(), "store": StoreResource()})
