"""`mammo synth`: a synthetic mammography archive and its ground truth."""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
from pathlib import Path

from ..core.home import Home
from ..core.imaging.dicom_write import TRANSFER_SYNTAXES
from ..core.imaging.vendors import VENDOR_PROFILES
from ..core.synthetic.mixes import MIXES
from ..core.synthetic.realism import DISTRACTORS, SHIFTS
from .common import CliError, new_file, out_folder, plural, progress_bar, seed_type, studies_type


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """`mammo synth OUT` and its options."""
    p = sub.add_parser(
        "synth",
        parents=[common],
        help="generate a synthetic mammography archive",
        description="Write synthetic mammograms (several vendors, transfer "
        "syntaxes, markers, mag views) and their ground truth CSV (beside OUT, never "
        "in it); deterministic by --seed, fresh UIDs without it.",
    )
    p.add_argument("out", help="output folder")
    p.add_argument(
        "--studies", type=studies_type, default=10, help="number of studies (default 10)"
    )
    p.add_argument(
        "--seed",
        type=seed_type,
        default=None,
        help="random seed (default: a fresh one, printed, so UIDs never repeat another archive's)",
    )
    p.add_argument(
        "--size",
        choices=["full", "small"],
        default="small",
        help="full vendor matrix, or ~1/8 scale for fast tests (default small)",
    )
    p.add_argument(
        "--vendor",
        action="append",
        choices=list(VENDOR_PROFILES),
        help="restrict to a vendor profile (repeatable)",
    )
    p.add_argument(
        "--ground-truth",
        help="where to write the CSV (default OUT_ground_truth.csv beside OUT, or "
        "$MAMMO_HOME/synthetic/NAME_ground_truth.csv for a drop in $MAMMO_HOME/incoming/NAME)",
    )
    p.add_argument(
        "--mix",
        choices=list(MIXES),
        default="enriched",
        help="study mix: enriched (~30%% of images with a marker, ~25%% mag; small archives "
        "hold every class) or screening (mostly screening studies: ~6%% marker, ~5%% mag) "
        "(default enriched)",
    )
    p.add_argument(
        "--transfer-syntax",
        action="append",
        choices=list(TRANSFER_SYNTAXES),
        help="force a transfer syntax (repeatable; default: each vendor's own); "
        "j2k-lossy, jpeg-lossy (12-bit) and jpeg8 (an 8-bit copy) are lossy",
    )
    _realism_options(p)
    p.set_defaults(func=cmd_synth)


def _realism_options(p: argparse.ArgumentParser) -> None:
    """The `realism` group: a named shift and the single options that override it."""
    shifts = p.add_argument_group(
        "realism", "move the archive away from the base generator (another hospital's archive)"
    )
    shifts.add_argument(
        "--shift",
        choices=list(SHIFTS),
        help="a named shift (the robustness benchmark's); the options below override it",
    )
    shifts.add_argument(
        "--metal-level",
        metavar="LO-HI",
        help="metal plateau as a fraction of the stored maximum, e.g. 0.85-0.95 (default 1)",
    )
    shifts.add_argument(
        "--letter-level", metavar="LO-HI", help="the same for lead letters (default 1)"
    )
    shifts.add_argument(
        "--distractors",
        metavar="LIST",
        help=f"put these in every image (comma-separated: {','.join(DISTRACTORS)})",
    )
    shifts.add_argument(
        "--no-paddle-band", action="store_true", help="mag views without the paddle's bright band"
    )
    shifts.add_argument(
        "--matrix-scale", type=float, help="rescale the detector matrix (same field of view)"
    )
    shifts.add_argument(
        "--declared-bits",
        type=int,
        metavar="N",
        help="BitsStored written in the header (e.g. 16 for 12-bit data)",
    )
    shifts.add_argument("--j2k-ratio", type=float, help="j2k-lossy compression ratio (15)")
    shifts.add_argument("--jpeg-quality", type=int, help="jpeg-lossy / jpeg8 quality (85)")


def cmd_synth(args: argparse.Namespace) -> int:
    from ..core.synthetic.archive import generate_archive

    out = out_folder(Path(args.out), empty=True)
    truth = Path(args.ground_truth) if args.ground_truth else default_truth(out)
    new_file(truth, ".csv")
    if args.seed is None:  # fresh UIDs: a new drop must not repeat the demo's archive
        import secrets

        args.seed = secrets.randbelow(2**31)
    realism, vendors, syntaxes = _realism(args)
    with progress_bar(None, "synth", args.quiet) as bar:
        images = generate_archive(
            out,
            studies=args.studies,
            seed=args.seed,
            size=args.size,
            vendors=vendors,
            transfer_syntaxes=syntaxes,
            progress=bar.update,
            ground_truth=truth,
            mix=args.mix,
            realism=realism,
        )
    classes = Counter(
        {
            (False, False): "neither",
            (True, False): "biopsy tool",
            (False, True): "mag view",
            (True, True): "both",
        }[(i.has_biopsy_tool, i.has_mag_view)]
        for i in images
    )
    print(
        f"wrote {plural(len(images), 'image')} in "
        f"{plural(len({i.study_instance_uid for i in images}), 'study')} "
        f"to {out} ({', '.join(f'{k}: {v}' for k, v in sorted(classes.items()))}); "
        f"ground truth: {truth}; seed {args.seed} (--seed {args.seed} makes it again)"
    )
    if realism.describe() != "base" or syntaxes or vendors:
        print(f"realism: {realism.describe()}"
              + (f"; syntaxes {', '.join(syntaxes)}" if syntaxes else "")
              + (f"; vendors {', '.join(vendors)}" if vendors else ""))  # fmt: skip
    return 0


def default_truth(out: Path) -> Path:
    """Where `mammo synth OUT` writes its ground truth by default: beside OUT, never in
    it (a drop would index it as a bad file), and for a drop under `$MAMMO_HOME/incoming/`
    in `$MAMMO_HOME/synthetic/` (where the demo keeps its own)."""
    if out.resolve().parent.name == "incoming":
        return Home(out.resolve().parent.parent).ground_truth(out.name)
    return out.parent / f"{out.name}_ground_truth.csv"


def _realism(args: argparse.Namespace):
    """(Realism, vendors, transfer syntaxes) from --shift and the single options, which
    override what the shift sets."""
    from ..core.synthetic.realism import SHIFTS, Realism, parse_range

    shift = SHIFTS[args.shift] if getattr(args, "shift", None) else None
    realism = shift.realism if shift else Realism()
    changes: dict = {}
    try:
        if getattr(args, "metal_level", None):
            changes["metal_level"] = parse_range(args.metal_level)
        if getattr(args, "letter_level", None):
            changes["letter_level"] = parse_range(args.letter_level)
        if getattr(args, "distractors", None):
            changes["distractors"] = tuple(d for d in args.distractors.split(",") if d)
        if getattr(args, "no_paddle_band", False):
            changes["paddle_band"] = False
        for name in ("matrix_scale", "declared_bits", "j2k_ratio", "jpeg_quality"):
            if getattr(args, name, None) is not None:
                changes[name] = getattr(args, name)
        realism = dataclasses.replace(realism, **changes)
    except ValueError as e:
        message = str(e)
        for f in dataclasses.fields(Realism):  # say it as the options are spelled
            message = message.replace(f.name, "--" + f.name.replace("_", "-"))
        raise CliError(message) from None
    vendors = args.vendor or (list(shift.vendors) if shift and shift.vendors else None)
    syntaxes = args.transfer_syntax or (
        list(shift.transfer_syntaxes) if shift and shift.transfer_syntaxes else None
    )
    return realism, vendors, syntaxes
