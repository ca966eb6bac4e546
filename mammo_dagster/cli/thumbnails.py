"""`mammo thumbnail` (one frame to a PNG) and `mammo thumbnails` (a folder, resumable)."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from .common import (
    CliError,
    int_in,
    new_file,
    out_folder,
    oversample_option,
    plural,
    progress_bar,
    size_type,
    write_csv,
)


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "thumbnail",
        parents=[common],
        help="render one DICOM frame as a PNG thumbnail",
        description="Render a frame as the model's thumbnail (VOI, inversion, padding; "
        "the window over 0-223 and headroom above it, where metal stands out from dense "
        "tissue), aspect ratio kept, padded to a square. --view writes what a person "
        "should look at instead: the radiologist's rendering (the window over 0-255).",
    )
    p.add_argument("file", help="DICOM file")
    p.add_argument("out", help="output PNG")
    p.add_argument(
        "--size", type=size_type, default=512, help="long side in px, 16-4096 (default 512)"
    )
    p.add_argument(
        "--frame",
        type=int_in(0, 100_000),
        default=0,
        help="frame of a multi-frame file, numbered from 0 (default 0)",
    )
    p.add_argument("--exact", action="store_true", help="full decode + float VOI (slower)")
    oversample_option(p)
    p.add_argument("--no-pad", action="store_true", help="don't pad to a square")
    p.add_argument(
        "--view",
        action="store_true",
        help="write the radiologist's rendering (what the labeler shows), not the model's",
    )
    p.set_defaults(func=cmd_thumbnail)
    p = sub.add_parser(
        "thumbnails",
        parents=[common],
        help="thumbnail every DICOM below a folder",
        description="Render every frame of every file below FOLDER (any depth, "
        "any name) into OUT, named <SOPInstanceUID>_<frame>.png; existing ones "
        "are kept, so a rerun resumes. Bad files become rows with an error in "
        "OUT/thumbnails.csv.",
    )
    p.add_argument("folder", help="the DICOM folder (drop) to read")
    p.add_argument("out", help="where thumbnails and thumbnails.csv go (may be inside FOLDER)")
    p.add_argument(
        "--size", type=size_type, default=512, help="long side in px, 16-4096 (default 512)"
    )
    p.add_argument("--workers", type=int_in(1, 256), default=2, help="worker processes (default 2)")
    oversample_option(p)
    p.set_defaults(func=cmd_thumbnails)


def _thumbnail_one(
    file: Path,
    out: Path,
    frame: int,
    size: int,
    pad: bool,
    exact: bool,
    oversample: int,
    view: bool = False,
) -> tuple[str, str | None]:
    """Render and save one frame (in a guarded child process): its summary and warnings.
    `view`: the radiologist's rendering instead of the model's thumbnail."""
    from ..core.files import atomic_write
    from ..core.imaging.guard import capture
    from ..core.imaging.thumbnails import render, save_png, viewing_png

    with capture() as notes:
        thumb = render(file, frame, size, pad=pad, exact=exact, oversample=oversample)
        for note in thumb.facts.warnings:
            notes.add(note)
        save_png(thumb.image, out, thumb.render, thumb.patches, thumb.spots)
    if view:
        png = viewing_png(out)
        with atomic_write(out, "wb") as f:
            f.write(png)
    h, w = thumb.image.shape
    kind = "the radiologist's rendering" if view else "the model's thumbnail"
    return f"{w}x{h} px, {thumb.voi.describe()}, {kind}", notes.text()


def cmd_thumbnail(args: argparse.Namespace) -> int:
    from ..core.imaging.pool import isolated

    out = new_file(Path(args.out), ".png")  # before the work, not after
    summary, warnings = isolated(
        _thumbnail_one,
        Path(args.file),
        out,
        args.frame,
        args.size,
        not args.no_pad,
        args.exact,
        args.oversample,
        args.view,
    )
    print(f"{args.out}: {summary}" + (f" (rendered with warnings: {warnings})" if warnings else ""))
    return 0


def cmd_thumbnails(args: argparse.Namespace) -> int:
    from ..core.imaging.batch import as_dicts, iter_files, thumbnail_folder

    root, out = Path(args.folder), out_folder(Path(args.out))
    if not root.is_dir():
        raise CliError(f"not a folder: {root}")
    files = list(iter_files(root, exclude=out))
    total = len(files)
    if not total:
        raise CliError(f"no files below {root}")
    t0 = time.perf_counter()
    with progress_bar(total, "thumbnails", args.quiet) as bar:
        results = thumbnail_folder(
            root,
            out,
            size=args.size,
            workers=args.workers,
            oversample=args.oversample,
            progress=bar.update,
            files=files,
        )
    elapsed = time.perf_counter() - t0
    report = write_csv(out / "thumbnails.csv", as_dicts(results))
    status = Counter(r.status for r in results)
    kinds = Counter(r.error_kind for r in results if r.error_kind)
    rendered = status["ok"]
    damaged = sum(bool(r.warnings) and r.status != "error" for r in results)
    print(
        f"{plural(len(results), 'frame')} from {plural(total, 'file')} in {elapsed:.1f} s "
        f"({rendered / elapsed if elapsed else 0:.1f} new thumbnails/s): "
        + ", ".join(f"{k} {v}" for k, v in sorted(status.items()))
        + (f"; errors: {', '.join(f'{k} {v}' for k, v in kinds.most_common())}" if kinds else "")
        + (f"; {damaged} rendered with warnings (see the warnings column)" if damaged else "")
        + f"\nthumbnails in {out}, one row per frame in {report}"
    )
    return 0
