"""Writing files so that no reader ever sees half of one (and a killed writer leaves
only a temp file that the next run can sweep)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kw) -> Iterator[IO]:
    """Write through a temp file in the same folder, renamed over `path` on success.

    Refuses to replace anything but a regular file (a folder, a device, a pipe). The
    file gets the usual permissions (0666 less the umask), not mkstemp's 0600. The
    temp file is named ``.<name>.<random>.tmp``.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise FileExistsError(f"{path} exists and is not a regular file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, **open_kw) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
