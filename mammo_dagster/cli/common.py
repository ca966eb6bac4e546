"""What every command shares: one-line errors, argument types, output checks, progress."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from ..core.files import atomic_write
from ..core.home import Home
from ..core.imaging.decode import DEFAULT_OVERSAMPLE


class CliError(Exception):
    """An error reported to the user as one line on stderr."""


def int_in(lo: int, hi: int):
    """An argparse type: an integer in [lo, hi], with a readable error."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {n}")
        return n

    return parse


size_type = int_in(16, 4096)  # thumbnails, not upscaled originals
studies_type = int_in(1, 100_000)
seed_type = int_in(0, 2**32 - 1)


def plural(n: int, word: str) -> str:
    many = word[:-1] + "ies" if word.endswith("y") else word + "s"
    return f"{n} {word if n == 1 else many}"


def new_file(path: Path, suffix: str | None = None) -> Path:
    """An output path we may write: not a folder or special file, the right suffix."""
    if path.exists() and not path.is_file():
        raise CliError(f"{path} exists and is not a regular file")
    if suffix and path.suffix.lower() != suffix:
        raise CliError(f"{path}: the output must be a {suffix} file")
    return path


def out_folder(path: Path, *, empty: bool = False) -> Path:
    """An output folder we may use: not a file; empty when asked."""
    if path.exists() and not path.is_dir():
        raise CliError(f"{path} exists and is not a folder")
    if empty and path.exists() and any(path.iterdir()):
        raise CliError(f"{path} is not empty: give a new folder (old files would mix in)")
    return path


def home_of(args: argparse.Namespace) -> Home:
    """The data folder: --home, else $MAMMO_HOME, else ./data (the CLI is the edge)."""
    return Home.from_env(getattr(args, "home", None))


def progress_bar(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="img", disable=quiet or None, leave=False, file=sys.stderr
    )


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Write rows atomically (temp file + rename): a reader never sees half a file."""
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["path"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def oversample_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--oversample",
        type=int,
        choices=[0, 1, 2],
        default=DEFAULT_OVERSAMPLE,
        help="halvings finer than --size the fast path decodes at before windowing "
        f"(default {DEFAULT_OVERSAMPLE}; 0 is fastest for JPEG 2000, ~2 gray levels "
        "off the exact rendering)",
    )
