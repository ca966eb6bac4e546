"""The ``mammo`` command line."""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .core.decode import DEFAULT_OVERSAMPLE
from .core.dicom_write import TRANSFER_SYNTAXES, VENDOR_PROFILES
from .core.files import atomic_write
from .core.home import ENV_HOME, ENV_RETRAIN_EVERY, Home
from .core.mixes import MIXES
from .core.preprocess import FLAGS, INPUT_SIZE
from .core.realism import DISTRACTORS, SHIFTS


class CliError(Exception):
    """An error reported to the user as one line on stderr."""


def _int_in(lo: int, hi: int):
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


_size = _int_in(16, 4096)  # thumbnails, not upscaled originals
_studies = _int_in(1, 100_000)
_seed = _int_in(0, 2**32 - 1)


def _plural(n: int, word: str) -> str:
    many = word[:-1] + "ies" if word.endswith("y") else word + "s"
    return f"{n} {word if n == 1 else many}"


def _new_file(path: Path, suffix: str | None = None) -> Path:
    """An output path we may write: not a folder or special file, the right suffix."""
    if path.exists() and not path.is_file():
        raise CliError(f"{path} exists and is not a regular file")
    if suffix and path.suffix.lower() != suffix:
        raise CliError(f"{path}: the output must be a {suffix} file")
    return path


def _folder(path: Path, *, empty: bool = False) -> Path:
    """An output folder we may use: not a file; empty when asked."""
    if path.exists() and not path.is_dir():
        raise CliError(f"{path} exists and is not a folder")
    if empty and path.exists() and any(path.iterdir()):
        raise CliError(f"{path} is not empty: give a new folder (old files would mix in)")
    return path


def _home(args: argparse.Namespace) -> Home:
    """The data folder: --home, else $MAMMO_HOME, else ./data (the CLI is the edge)."""
    return Home.from_env(getattr(args, "home", None))


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="img", disable=quiet or None, leave=False, file=sys.stderr
    )


def cmd_synth(args: argparse.Namespace) -> int:
    from .core.synthetic import generate_archive

    out = _folder(Path(args.out), empty=True)
    truth = Path(args.ground_truth) if args.ground_truth else default_truth(out)
    _new_file(truth, ".csv")
    if args.seed is None:  # fresh UIDs: a new drop must not repeat the demo's archive
        import secrets

        args.seed = secrets.randbelow(2**31)
    realism, vendors, syntaxes = _realism(args)
    with _progress(None, "synth", args.quiet) as bar:
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
        f"wrote {_plural(len(images), 'image')} in "
        f"{_plural(len({i.study_instance_uid for i in images}), 'study')} "
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
    from .core.realism import SHIFTS, Realism, parse_range

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


def _inspect_one(path: Path, exact: bool, salt: str | None) -> dict:
    from .core.dicom import DicomError, open_dicom
    from .core.thumbnails import render_frame

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


def cmd_thumbnail(args: argparse.Namespace) -> int:
    from .core.thumbnails import render, save_png

    _new_file(Path(args.out), ".png")  # before the work, not after

    thumb = render(
        Path(args.file),
        args.frame,
        args.size,
        pad=not args.no_pad,
        exact=args.exact,
        oversample=args.oversample,
    )
    save_png(
        thumb.image, _new_file(Path(args.out), ".png"), thumb.render, thumb.patches, thumb.spots
    )
    print(f"{args.out}: {thumb.image.shape[1]}x{thumb.image.shape[0]} px, {thumb.voi.describe()}")
    return 0


def cmd_thumbnails(args: argparse.Namespace) -> int:
    from .core.batch import as_dicts, iter_files, thumbnail_folder

    root, out = Path(args.folder), _folder(Path(args.out))
    if not root.is_dir():
        raise CliError(f"not a folder: {root}")
    files = list(iter_files(root, exclude=out))
    total = len(files)
    if not total:
        raise CliError(f"no files below {root}")
    t0 = time.perf_counter()
    with _progress(total, "thumbnails", args.quiet) as bar:
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
    print(
        f"{_plural(len(results), 'frame')} from {_plural(total, 'file')} in {elapsed:.1f} s "
        f"({rendered / elapsed if elapsed else 0:.1f} new thumbnails/s): "
        + ", ".join(f"{k} {v}" for k, v in sorted(status.items()))
        + (f"; errors: {', '.join(f'{k} {v}' for k, v in kinds.most_common())}" if kinds else "")
        + f"\nthumbnails in {out}, one row per frame in {report}"
    )
    return 0


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Write rows atomically (temp file + rename): a reader never sees half a file."""
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["path"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    home = _home(args)
    drop = home.drop("demo")
    thumbs = home.thumbnails
    print(f"mammo demo in {home.root} (set {ENV_HOME} to use another folder)")
    truth = home.ground_truth("demo")  # outside the drop the pipeline scans
    if not truth.exists() and drop.exists() and any(drop.iterdir()):
        raise CliError(
            f"{drop} has files but no ground truth (an interrupted demo?): "
            "remove that folder and run the demo again"
        )
    if not truth.exists():
        cmd_synth(
            argparse.Namespace(
                out=drop,
                studies=args.studies,
                seed=args.seed,
                size="small",
                vendor=None,
                transfer_syntax=None,
                ground_truth=truth,
                quiet=args.quiet,
                mix="enriched",
            )
        )
    else:
        print(f"synthetic archive already in {drop}")
    try:
        from .pipeline import materialize_ingest
    except ImportError:  # an install without the `pipeline` extra: the core alone
        cmd_thumbnails(
            argparse.Namespace(
                folder=drop,
                out=thumbs,
                size=args.size,
                workers=args.workers,
                quiet=args.quiet,
                oversample=DEFAULT_OVERSAMPLE,
            )
        )
        print("Ran generate -> thumbnails with the core (Dagster is not installed).")
        return 0
    dagster_home = home.dagster
    print(f"ingesting drop 'demo' through Dagster (runs recorded in {dagster_home}) ...")
    result = materialize_ingest(
        home, "demo", size=args.size, workers=args.workers, dagster_home=dagster_home
    )
    if not result.success:
        raise CliError("the Dagster run failed; see `make dev` (Runs) for the logs")
    index = result.asset_materializations_for_node("dicom_index")[0].metadata
    made = result.asset_materializations_for_node("thumbnails")[0].metadata
    checks = result.get_asset_check_evaluations()
    print(
        f"dicom_index: {index['frames'].value} frames, {index['studies'].value} studies, "
        f"{index['failed'].value} failed, {index['duplicates'].value} duplicates "
        f"-> {home.db} (table dicom_index)"
    )
    print(
        f"thumbnails: {made['rendered'].value} rendered, {made['cached'].value} cached -> {thumbs}"
    )
    print(
        "checks: "
        + ", ".join(f"{c.check_name} {'passed' if c.passed else 'FAILED'}" for c in checks)
    )
    if args.labels:
        _demo_model(args, home, truth, dagster_home)
    print(
        "Next: `make dev` (Dagster UI on http://127.0.0.1:3000, labeler on "
        "http://127.0.0.1:5001) to look at the assets, runs and images."
    )
    return 0


def _demo_model(args: argparse.Namespace, home: Home, truth: Path, dagster_home: Path) -> None:
    """The active-learning loop on generated data: a simulated labeler labels through the
    labeler's HTTP API; `active_learning_sensor` asks for a retrain; the new model's
    predictions and queue follow (`new_model_sensor`); the next labels come from that
    queue. Each turn is scored against the generator's ground truth."""
    from labeler.process import running

    from .core import queries
    from .core.labels import load_events
    from .core.simulated import SimulatedLabeler
    from .core.store import Store
    from .core.synthetic import read_ground_truth
    from .pipeline import turn_loop

    store = Store(home.db)
    rows = read_ground_truth(truth)
    answers = {r.sop_instance_uid: (r.has_biopsy_tool, r.has_mag_view) for r in rows}
    kept = len(load_events(store))
    batches = [args.labels] + [args.per_round] * args.rounds
    if kept:
        print(f"{kept} label events kept from an earlier demo: no new labels, one sensor tick")
        batches = [0]
    # every batch is enough for the sensor to fire (the labeler shows the same number)
    every = max(1, min(b for b in batches if b) if any(batches) else 1)
    if os.environ.get(ENV_RETRAIN_EVERY) not in (None, "", str(every)):
        print(f"(the demo retrains every {every} labels, not ${ENV_RETRAIN_EVERY})")
    home = dataclasses.replace(home, retrain_every=every)  # the sensor's and the labeler's
    training = {"size": args.input_size, "epochs": args.epochs}
    summary: list[tuple] = []
    cursor = None
    log = home.labeler / "demo.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(running(home, log=log))
        except (RuntimeError, TimeoutError) as e:
            raise CliError(
                f"could not start the labeler on {home.root} ({e}; see {log}). Is `make dev` or "
                "`mammo label` running on this data folder? Stop it and run the demo again."
            ) from None
        labeler = SimulatedLabeler(url, answers, annotator="demo-labeler")
        for turn, n in enumerate(batches):
            if n:
                seen = max((e.seq or 0 for e in load_events(store)), default=0)
                got = labeler.label(n)
                labeler.wait_stored()
                sources = Counter(e.source for e in load_events(store, after_seq=seen))
                print(
                    f"turn {turn + 1}: labels: {got} images labeled by a simulated labeler "
                    f"through the labeler's API ({_counts(sources)})"
                )
            size = args.input_size
            print(f"  ticking active_learning_sensor (a retrain at {size} px takes a few "
                  "minutes on 2 cores) ...", flush=True)  # fmt: skip
            runs, cursor, skipped = turn_loop(
                home, dagster_home=dagster_home, training=training, cursor=cursor
            )
            if skipped:
                print(f"  active_learning_sensor skipped: {skipped}")
            for r in runs:
                where = f"[{r.partition}]" if r.partition else ""
                print(f"  {r.sensor} -> {r.job}{where} ({r.run_key}): "
                      f"{'ok' if r.success else 'FAILED'}")  # fmt: skip
            if not all(r.success for r in runs):
                raise CliError("a model run failed; see `make dev` (Runs) for the logs")
            retrain = next((r.result for r in runs if r.job == "retrain"), None)
            if retrain is not None:
                _report_model(retrain)
            if not any(r.job == "study_csv" for r in runs) and not skipped:
                raise CliError("no study CSV was written (no drop has predictions?)")
            if skipped and summary:
                continue  # no new model: nothing new to score
            summary.append(_turn_summary(home, store, answers))
            if summary[-1][0] == "-":
                raise CliError(
                    f"no model after turn {turn + 1}: {n} labels asked for, fewer were "
                    "labeled (a small archive?); try more --studies or fewer --labels"
                )
            if turn + 1 < len(batches):
                version = summary[-1][0]  # the next labels come from its queue
                labeler.wait_model(version, queued=bool(queries.queued_count(store, version)))
    if len(summary) > 1 or not kept:
        _print_loop(summary)
    csv_path = home.study_csv
    if csv_path.exists():
        _score(csv_path, rows)


def _counts(counter: Counter) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counter.items()))


def _report_model(result) -> None:
    trained = result.asset_materializations_for_node("trained_model")[0].metadata
    onnx = result.asset_materializations_for_node("onnx_model")[0].metadata
    checks = ", ".join(
        f"{c.check_name} {_check_state(c)}" for c in result.get_asset_check_evaluations()
    )
    print(
        f"  model {trained['version'].value}: trained in {trained['training_seconds'].value} s "
        f"({trained['pretrained'].value}); {checks}; current: {onnx['current'].value}"
    )


def _check_state(check) -> str:
    if check.passed:
        return "passed"
    warn = getattr(check.severity, "value", check.severity) == "WARN"
    return "failed (a warning: the fp32 model is used)" if warn else "FAILED"


def _turn_summary(home: Home, store, answers: dict) -> tuple:
    """(model version, labels it learned from, per flag (accuracy at p >= 0.5, AUC, missed,
    false alarms), images) on the hold-out patients' images, labeled or not: no model of
    any turn trains on them. Missed and false alarms are the model's flags."""
    import numpy as np

    from .core import queries
    from .core.modelstore import read_current
    from .core.splits import split_of

    current = read_current(home.models)
    if current is None:
        return ("-", 0, {}, 0)

    rows = [
        r for r in queries.predictions_with_patients(store, current.version)
        if r[0] in answers and split_of(r[5], r[6]) == "holdout"
    ]  # fmt: skip
    out = {
        flag: _flag_summary(
            np.array([answers[r[0]][k] for r in rows], bool),
            np.array([r[1 + k] for r in rows], float),
            np.array([bool(r[3 + k]) for r in rows], bool),
        )
        for k, flag in enumerate(FLAGS)
    }
    return (current.version, current.label_count, out, len(rows))


def _flag_summary(y, p, flagged) -> tuple:
    """(accuracy at p >= 0.5, AUC, positives not flagged, negatives flagged) of one flag."""
    import numpy as np

    from .core import metrics

    accuracy = float(np.mean((p >= 0.5) == y)) if len(y) else float("nan")
    return accuracy, metrics.auc(y, p), int((y & ~flagged).sum()), int((flagged & ~y).sum())


def _print_loop(summary: list[tuple]) -> None:
    print("active learning, turn by turn (the hold-out patients' images, never trained on):")
    head = " | ".join(f"{flag + ' acc':>10s}   AUC missed false" for flag in FLAGS)
    print(f"  model   labels  images | {head}")
    for version, labels, flags, n in summary:
        cells = " | ".join(
            f"{acc:10.1%} {auc if auc is not None else float('nan'):5.3f} {missed:6d} {false:5d}"
            for acc, auc, missed, false in (flags.get(f, (0, None, 0, 0)) for f in FLAGS)
        )
        print(f"  {version:6s} {labels:7d} {n:7d} | {cells}")
    print("  (acc: p >= 0.5, as in benchmarks/bench_active_learning.py; missed and false alarms:")
    print("  its flags, at the threshold chosen for the target recall: biopsy on the second look's")
    print("  out-of-fold scores, mag on its validation split)")


def _score(csv_path: Path, truth: list) -> None:
    """Study-level accuracy of the CSV against the generator's ground truth."""
    want: dict[str, list[bool]] = {}
    for r in truth:
        w = want.setdefault(r.study_instance_uid, [False, False])
        w[0] |= r.has_biopsy_tool
        w[1] |= r.has_mag_view
    got = {r["study_id"]: r for r in csv.DictReader(csv_path.open())}
    both = [s for s in want if s in got]
    for k, (flag, column) in enumerate((("biopsy", "has_biopsy_tool"), ("mag", "has_mag_view"))):
        right = sum(want[s][k] == (got[s][column] == "1") for s in both)
        missed = sum(want[s][k] and got[s][column] == "0" for s in both)
        false = sum(not want[s][k] and got[s][column] == "1" for s in both)
        positives = sum(want[s][k] for s in both)
        print(
            f"  {flag}: {right}/{len(both)} studies right ({right / max(1, len(both)):.0%}): "
            f"{missed} of {positives} studies with one missed, "
            f"{false} of {len(both) - positives} without one flagged (false alarms)"
        )
    print(f"study CSV: {csv_path}")


def _oversample_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--oversample",
        type=int,
        choices=[0, 1, 2],
        default=DEFAULT_OVERSAMPLE,
        help="halvings finer than --size the fast path decodes at before windowing "
        f"(default {DEFAULT_OVERSAMPLE}; 0 is fastest for JPEG 2000, ~2 gray levels "
        "off the exact rendering)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammo",
        description="Flag biopsy tools/markers and magnification views in mammography DICOMs.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)  # -q after the command works too
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
    )

    p = sub.add_parser(
        "synth",
        parents=[common],
        help="generate a synthetic mammography archive",
        description="Write synthetic mammograms (several vendors, transfer "
        "syntaxes, markers, mag views) and their ground truth CSV (beside OUT, never "
        "in it); deterministic by --seed, fresh UIDs without it.",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--studies", type=_studies, default=10, help="number of studies (default 10)")
    p.add_argument(
        "--seed",
        type=_seed,
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
    p.set_defaults(func=cmd_synth)

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

    p = sub.add_parser(
        "thumbnail",
        parents=[common],
        help="render one DICOM frame as a PNG thumbnail",
        description="Render a frame as the 8-bit image a radiologist would see "
        "(VOI, inversion, padding), aspect ratio kept, padded to a square.",
    )
    p.add_argument("file", help="DICOM file")
    p.add_argument("out", help="output PNG")
    p.add_argument("--size", type=_size, default=512, help="long side in px, 16-4096 (default 512)")
    p.add_argument(
        "--frame",
        type=_int_in(0, 100_000),
        default=0,
        help="frame of a multi-frame file, numbered from 0 (default 0)",
    )
    p.add_argument("--exact", action="store_true", help="full decode + float VOI (slower)")
    _oversample_option(p)
    p.add_argument("--no-pad", action="store_true", help="don't pad to a square")
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
    p.add_argument("--size", type=_size, default=512, help="long side in px, 16-4096 (default 512)")
    p.add_argument(
        "--workers", type=_int_in(1, 256), default=2, help="worker processes (default 2)"
    )
    _oversample_option(p)
    p.set_defaults(func=cmd_thumbnails)

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="run the pipeline end to end on generated data",
        description=f"Generate a small synthetic archive under ${ENV_HOME} "
        "(default ./data) and run everything that exists on it.",
    )
    p.add_argument("--home", help=f"data folder (default ${ENV_HOME} or ./data)")
    p.add_argument(
        "--studies",
        type=_studies,
        default=100,
        help="studies in the synthetic archive (default 100)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=_size, default=512, help="thumbnail long side (default 512)")
    p.add_argument(
        "--workers", type=_int_in(1, 256), default=2, help="worker processes (default 2)"
    )
    p.add_argument(
        "--labels",
        type=_int_in(0, 1_000_000),
        default=100,
        help="images a simulated labeler labels (from the ground truth, through the "
        "labeler's API) before the first model (0: ingest only; default 100)",
    )
    p.add_argument(
        "--rounds",
        type=_int_in(0, 100),
        default=2,
        help="turns of the active-learning loop after the first model (default 2)",
    )
    p.add_argument(
        "--per-round",
        type=_int_in(1, 1_000_000),
        default=100,
        help="labels per turn, taken in the new model's labeling_queue order (default 100); "
        "the demo sets $MAMMO_RETRAIN_EVERY (the sensor's own default is 50) to the smaller "
        "of --labels and --per-round",
    )
    p.add_argument(
        "--epochs", type=_int_in(1, 200), default=16, help="training epochs (default 16)"
    )
    p.add_argument(
        "--input-size",
        type=_int_in(32, 1024),
        default=INPUT_SIZE,
        help=f"model input (default {INPUT_SIZE})",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "label",
        parents=[common],
        help="start the labeler (keyboard labeling app) on 127.0.0.1:5001",
        description="Start the labeling app on the data folder. Keys: 1 biopsy tool/marker, "
        "2 mag view, 3 neither, 4 both, s skip, u undo. Review mode (/review): y the model "
        "is right, n then 1-4 it is wrong, g Grad-CAM.",
    )
    from labeler.cli import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_label)

    p = sub.add_parser(
        "predict",
        parents=[common],
        help="DICOM folder -> study CSV with the current (or a given) ONNX model",
        description="Score every DICOM frame below --input-dir (any depth, any names) "
        "with ONNX Runtime and write one row per study to --output. No Dagster or torch "
        "needed. Resumable: a rerun continues an interrupted one (--restart starts over). "
        "Files without an image are listed in OUTPUT.errors.csv.",
    )
    p.add_argument("--input-dir", required=True, help="the DICOM folder")
    p.add_argument("--output", required=True, help="the study CSV to write")
    p.add_argument("--model", help="an ONNX file or a model folder (default: the current model)")
    p.add_argument("--home", help=f"data folder with the model store (default ${ENV_HOME})")
    p.add_argument("--fp32", action="store_true", help="use the fp32 model, not int8")
    p.add_argument(
        "--workers", type=_int_in(1, 256), default=2, help="decode processes (default 2)"
    )
    p.add_argument("--threads", type=_int_in(1, 256), help="ONNX Runtime threads")
    p.add_argument("--restart", action="store_true", help="ignore an earlier run's results")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "dev",
        parents=[common],
        help="Dagster's UI and the labeler together (Ctrl-C stops both)",
        description="Start `dagster dev` (UI on 127.0.0.1:3000) and the labeler "
        "(127.0.0.1:5001) on the same data folder; Ctrl-C stops both cleanly.",
    )
    p.add_argument("--home", help=f"data folder (default ${ENV_HOME} or ./data)")
    p.add_argument("--dagster-port", type=int, default=3000)
    p.add_argument("--labeler-port", type=int, default=5001)
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser(
        "labels",
        parents=[common],
        help="import or export labels as CSV",
        description="CSV columns: sop_instance_uid,has_biopsy_tool,has_mag_view,annotator "
        "(then frame,source,model_version,labeled_at). Works while the labeler runs.",
    )
    p.add_argument("action", choices=["import", "export"])
    p.add_argument("file", help="the CSV to read (import) or write (export)")
    p.add_argument("--home", help=f"data folder (default ${ENV_HOME} or ./data)")
    p.add_argument(
        "--annotator", default="import", help="import: for rows without one (default import)"
    )
    p.add_argument(
        "--history", action="store_true", help="export: every event (labels, skips, undos)"
    )
    p.set_defaults(func=cmd_labels)

    p = sub.add_parser(
        "weights",
        parents=[common],
        help="bring ImageNet ResNet18 weights in offline, or show which are cached",
        description="Training starts from ImageNet weights when torch's hub cache holds "
        "them; nothing is downloaded at run time. `import FILE` checks a torchvision "
        "resnet18 state dict (e.g. resnet18-f37072fd.pth copied from another machine) and "
        "puts it there.",
    )
    p.add_argument("action", choices=["status", "import"])
    p.add_argument("file", nargs="?", help="import: the .pth file")
    p.set_defaults(func=cmd_weights)
    return parser


def _die_with_parent() -> None:
    """In a child of `mammo dev`: Ctrl-C handled normally even if `mammo dev` was started
    with SIGINT ignored (Dagster stops its own servers with SIGINT), and (Linux) SIGTERM
    when `mammo dev` dies, even by SIGKILL, so no server outlives it."""
    import ctypes
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def cmd_dev(args: argparse.Namespace) -> int:
    """Dagster's UI and the labeler side by side; Ctrl-C (or either one exiting) stops both."""
    import shutil
    import signal
    import subprocess

    from labeler.process import stop

    home = _home(args)
    dagster_home = home.dagster
    dagster_home.mkdir(parents=True, exist_ok=True)
    project = Path(__file__).resolve().parent.parent
    if (project / "dagster.yaml").exists():
        shutil.copyfile(project / "dagster.yaml", dagster_home / "dagster.yaml")
    env = os.environ | home.env()  # `dagster dev` finds the data folder in its environment
    bin_dir = Path(sys.executable).parent
    commands = {
        "dagster": [
            str(bin_dir / "dagster"),
            "dev",
            "-w",
            str(project / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(args.dagster_port),
        ],
        "labeler": [
            sys.executable,
            "-m",
            "labeler",
            "--home",
            str(home.root),
            "--port",
            str(args.labeler_port),
        ],
    }
    procs = {
        name: subprocess.Popen(
            cmd, env=env, cwd=project, start_new_session=True, preexec_fn=_die_with_parent
        )
        for name, cmd in commands.items()
    }
    print(
        f"Dagster UI on http://127.0.0.1:{args.dagster_port}, labeler on "
        f"http://127.0.0.1:{args.labeler_port} (data: {home.root}). Ctrl-C stops both.",
        flush=True,
    )

    def terminated(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    # Explicitly: a process started in the background by a shell without job control
    # inherits SIGINT *ignored*, and Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, terminated)
    status = 0
    try:
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        name, proc = next((n, p) for n, p in procs.items() if p.poll() is not None)
        status = proc.returncode or 0
        print(f"{name} exited with status {status}; stopping the other", file=sys.stderr)
    except KeyboardInterrupt:
        print("stopping Dagster and the labeler ...", file=sys.stderr, flush=True)
    finally:
        for proc in procs.values():
            stop(proc, timeout=20)
    return status


def cmd_predict(args: argparse.Namespace) -> int:
    from .core.modelstore import current_model_file
    from .core.predict import predict_folder

    if args.model:
        model = Path(args.model)
        if model.is_dir():
            model = model / ("model.onnx" if args.fp32 else "model.int8.onnx")
            if not model.exists():
                model = model.with_name("model.onnx")
        if not model.is_file():
            raise CliError(f"--model {args.model}: no ONNX model there")
    else:
        home = _home(args)
        try:
            _current, model = current_model_file(home.models, int8=not args.fp32)
        except FileNotFoundError as e:
            raise CliError(str(e)) from e
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    print(f"model: {model}", file=sys.stderr)
    with _progress(None, "predict", args.quiet) as bar:
        report = predict_folder(
            Path(args.input_dir),
            output,
            model,
            workers=args.workers,
            threads=args.threads,
            progress=bar.update,
            restart=args.restart,
        )
    print(
        f"{report.files} files ({report.skipped} done by an earlier run), {report.images} "
        f"images scored, {report.errors} without an image -> {report.studies} studies in "
        f"{report.output}\n  image rows: {report.images_csv}\n  errors: {report.errors_csv}"
    )
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    try:
        from .core import weights
    except ImportError as e:  # pragma: no cover - an install without torch
        raise CliError(f"needs the train extra (torch): {e}") from None
    if args.action == "import":
        if not args.file:
            raise CliError("import needs the weights file: mammo weights import FILE")
        dest = weights.import_weights(Path(args.file))
        print(f"ImageNet ResNet18 weights in {dest}: training starts from them "
              "(trained_model config pretrained: auto)")  # fmt: skip
        return 0
    found = weights.cached()
    print(f"ImageNet ResNet18 weights: {found}" if found else
          f"no ImageNet ResNet18 weights in {weights.cache_dir()}: training starts from "
          "scratch (mammo weights import FILE brings them in)")  # fmt: skip
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from labeler.cli import run

    return run(args)


def cmd_labels(args: argparse.Namespace) -> int:
    from .core.labels import LabelFileError, export_csv, import_csv
    from .core.store import Store

    store = Store(_home(args).db)
    store.migrate()
    path = Path(args.file)
    if args.action == "export":
        n = export_csv(store, path, history=args.history)
        what = "events" if args.history else "labeled images"
        print(f"wrote {n} {what} to {path}")
        return 0
    try:
        report = import_csv(store, path, default_annotator=args.annotator)
    except LabelFileError as e:
        raise CliError(f"{e} (nothing imported)") from e
    print(
        f"{report.rows} rows: {report.added} labels added, {report.unchanged} already so"
        + (f", {report.not_indexed} for images not indexed yet" if report.not_indexed else "")
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: errors are one line on stderr and a non-zero exit, no traceback."""
    from .core.dicom import DicomError

    warnings.filterwarnings("ignore", module="pydicom")
    warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecations
    logging.basicConfig(level=logging.WARNING, format="mammo: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DicomError as e:
        print(f"mammo {args.command}: {args_target(args)}: {e}", file=sys.stderr)
    except (CliError, OSError, ValueError) as e:
        print(f"mammo {args.command}: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"mammo {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line, and say where to look
        print(
            f"mammo {args.command}: internal error {type(e).__name__}: {e} (please report it)",
            file=sys.stderr,
        )
    return 1


def args_target(args: argparse.Namespace) -> str:
    return str(getattr(args, "file", None) or getattr(args, "folder", None) or "")


if __name__ == "__main__":
    sys.exit(main())
