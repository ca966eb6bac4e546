"""`mammo inspect`: header facts and decode status of DICOM files, as JSON."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..core.home import Home


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "inspect",
        parents=[common],
        help="header facts and decode status as JSON",
        description="Print header facts (no patient name or ID) and whether every "
        "frame decodes, as JSON. Exit status 1 when a file gives no image.",
    )
    p.add_argument("files", nargs="+", help="DICOM file(s)")
    p.add_argument(
        "--fast",
        action="store_true",
        help="check with the fast reduced-resolution decode instead of a full decode",
    )
    p.set_defaults(func=cmd_inspect)


def _inspect_one(path: Path, exact: bool, salt: str | None) -> dict:
    """One file's report (in a guarded child process: a codec crash or hang is a report
    too, never the command's end)."""
    from ..core.imaging.dicom import DicomError
    from ..core.imaging.pool import isolated

    try:
        return isolated(_inspect_file, path, exact, salt)
    except DicomError as e:
        return {"path": str(path), "status": "error", "error_kind": e.kind.value, "error": e.reason}


def _inspect_file(path: Path, exact: bool, salt: str | None) -> dict:
    from ..core.imaging.guard import capture

    with capture() as notes:
        report = _inspect_frames(path, exact, salt)
    for note in (report.get("facts") or {}).get("warnings") or []:
        notes.add(note)
    if notes.items:
        report["warnings"] = notes.items
    return report


def _inspect_frames(path: Path, exact: bool, salt: str | None) -> dict:
    from ..core.imaging.dicom import DicomError, open_dicom
    from ..core.imaging.thumbnails import render_frame

    report: dict = {"path": str(path)}
    try:
        dicom = open_dicom(path, salt=salt)
    except DicomError as e:
        return report | {"status": "error", "error_kind": e.kind.value, "error": e.reason}
    report["facts"] = dicom.facts.to_dict()
    frames = []
    for frame in range(dicom.facts.number_of_frames):
        t0 = time.perf_counter()
        try:
            thumb = render_frame(dicom, frame, 256, exact=exact)
            frames.append(
                {
                    "frame": frame,
                    "status": "ok",
                    "voi": thumb.voi.describe(),
                    "decode_ms": round((time.perf_counter() - t0) * 1000, 1),
                }
            )
        except DicomError as e:
            frames.append(
                {"frame": frame, "status": "error", "error_kind": e.kind.value, "error": e.reason}
            )
    ok = all(f["status"] == "ok" for f in frames)
    report |= {"status": "ok" if ok else "error", "frames": frames}
    if not ok:
        bad = next(f for f in frames if f["status"] != "ok")
        report |= {"error_kind": bad["error_kind"], "error": bad["error"]}
    return report


def cmd_inspect(args: argparse.Namespace) -> int:
    salt = Home.from_env().patient_salt(create=False)  # the key the index has, if any
    reports = [_inspect_one(Path(p), exact=not args.fast, salt=salt) for p in args.files]
    print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    return 0 if all(r["status"] == "ok" for r in reports) else 1
