"""The data folder: one typed `Home` owns its layout, its settings and its patient-key salt.

A `Home` is built once at the edge (``Home.from_env``: an explicit folder, else
``$MAMMO_HOME``, else ``./data``) and passed down explicitly; nothing below the edge
reads ``$MAMMO_HOME``. Layout::

    <root>/incoming/<drop>/...   DICOM drops          <root>/thumbnails/     model inputs
    <root>/models/<version>/     the model store      <root>/predictions/    study CSV, audit
    <root>/training_sets/        label snapshots      <root>/gradcam/        heatmap overlays
    <root>/synthetic/            generated truth      <root>/labeler/        the labeler's own
    <root>/mammo.duckdb          the store            <root>/.patient_salt   the key salt
    <root>/dagster/              Dagster's instance, unless $DAGSTER_HOME says otherwise
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_HOME = "MAMMO_HOME"
ENV_SALT = "MAMMO_PATIENT_SALT"
ENV_RETRAIN_EVERY = "MAMMO_RETRAIN_EVERY"
ENV_DAGSTER_HOME = "DAGSTER_HOME"
DEFAULT_RETRAIN_EVERY = 50
DB_NAME = "mammo.duckdb"
SALT_NAME = ".patient_salt"
STUDY_CSV = "study_predictions.csv"


def parse_retrain_every(value: str | int | None) -> int:
    """New labels that make a retrain due: a whole number >= 1 (default 50)."""
    value = value or DEFAULT_RETRAIN_EVERY
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{ENV_RETRAIN_EVERY} must be a whole number, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{ENV_RETRAIN_EVERY} must be at least 1, got {n}")
    return n


@dataclass(frozen=True)
class Home:
    """One data folder (absolute) and the settings the tools on it share."""

    root: Path
    retrain_every: int = DEFAULT_RETRAIN_EVERY  #: new labels that make a retrain due
    dagster_home: Path | None = None  #: Dagster's instance (default: <root>/dagster)

    @classmethod
    def from_env(
        cls,
        folder: str | Path | None = None,
        *,
        retrain_every: int | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> Home:
        """The edge: `folder`, else ``$MAMMO_HOME``, else ``./data`` (made absolute), with
        ``$MAMMO_RETRAIN_EVERY`` and ``$DAGSTER_HOME`` unless given."""
        root = Path(folder or environ.get(ENV_HOME) or "data").expanduser().resolve()
        dagster = environ.get(ENV_DAGSTER_HOME)
        return cls(
            root,
            retrain_every or parse_retrain_every(environ.get(ENV_RETRAIN_EVERY)),
            Path(dagster) if dagster else None,
        )

    @classmethod
    def of(cls, home: Home | str | Path | None) -> Home:
        """`home` itself when it is a Home, else the Home of that folder (`from_env`)."""
        return home if isinstance(home, Home) else cls.from_env(home)

    # -- layout --------------------------------------------------------------
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
        """Where the study CSV (and the header audit) go."""
        return self.root / "predictions"

    @property
    def study_csv(self) -> Path:
        return self.predictions / STUDY_CSV

    @property
    def synthetic(self) -> Path:
        """Generated archives' ground truth, outside every drop."""
        return self.root / "synthetic"

    @property
    def gradcam(self) -> Path:
        """Heatmap overlays, one folder per model version."""
        return self.root / "gradcam"

    @property
    def labeler(self) -> Path:
        """The labeler's own files (journal, session key, lock); never served."""
        return self.root / "labeler"

    @property
    def db(self) -> Path:
        """The DuckDB store."""
        return self.root / DB_NAME

    @property
    def salt_file(self) -> Path:
        return self.root / SALT_NAME

    @property
    def dagster(self) -> Path:
        """Dagster's instance folder: ``$DAGSTER_HOME`` when set, else <root>/dagster."""
        return self.dagster_home or self.root / "dagster"

    def drop(self, name: str) -> Path:
        return self.incoming / name

    def ground_truth(self, drop: str) -> Path:
        """Where a generated drop's ground truth goes (outside the drop the pipeline scans)."""
        return self.synthetic / f"{drop}_ground_truth.csv"

    # -- settings that travel ------------------------------------------------
    def env(self) -> dict[str, str]:
        """What a child process (Dagster's code server, the labeler) needs to find this
        data folder with these settings: the one place such variables are written."""
        return {
            ENV_HOME: str(self.root),
            ENV_RETRAIN_EVERY: str(self.retrain_every),
            ENV_DAGSTER_HOME: str(self.dagster),
        }

    def patient_salt(self, *, create: bool = True) -> str | None:
        """The secret salt for patient keys of this data folder.

        ``$MAMMO_PATIENT_SALT`` when set (a site secret: share it across machines so keys
        agree); otherwise a random salt kept in ``<root>/.patient_salt`` (mode 600),
        created on first use unless `create` is false (then None when there is none).
        Without the salt a patient key cannot be reversed by hashing candidate IDs.
        """
        if salt := os.environ.get(ENV_SALT):
            return salt
        path = self.salt_file
        if not path.exists():
            if not create:
                return None
            _create_salt(path)
        return path.read_text().strip()


def _create_salt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{SALT_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(16))
    try:
        os.link(tmp, path)  # atomic and never overwrites: concurrent first runs agree
        logging.getLogger("mammo").warning(
            "created a new patient-key salt in %s; set %s (or %s to a fixed folder) so "
            "that keys stay the same wherever the tools run",
            path,
            ENV_SALT,
            ENV_HOME,
        )
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
