"""Where everything lives: one data folder named by ``MAMMO_HOME`` (default ``./data``)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

ENV_HOME = "MAMMO_HOME"
ENV_SALT = "MAMMO_PATIENT_SALT"
ENV_RETRAIN_EVERY = "MAMMO_RETRAIN_EVERY"


def retrain_every() -> int:
    """New labels that make a retrain due (``$MAMMO_RETRAIN_EVERY``, default 50)."""
    value = os.environ.get(ENV_RETRAIN_EVERY) or "50"
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{ENV_RETRAIN_EVERY} must be a whole number, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{ENV_RETRAIN_EVERY} must be at least 1, got {n}")
    return n


def mammo_home() -> Path:
    """The data folder: ``$MAMMO_HOME`` or ``./data``, made absolute."""
    return Path(os.environ.get(ENV_HOME) or "data").expanduser().resolve()


def patient_salt(home: Path | None = None) -> str:
    """The secret salt for patient keys.

    ``$MAMMO_PATIENT_SALT`` when set (share it across machines of one site so
    keys agree); otherwise a random salt created once in ``$MAMMO_HOME/.patient_salt``
    (mode 600). Without the salt a patient key cannot be reversed by hashing
    candidate IDs.
    """
    if salt := os.environ.get(ENV_SALT):
        return salt
    path = (home or mammo_home()) / ".patient_salt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".patient_salt.{os.getpid()}.tmp")
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
    return path.read_text().strip()
