"""`mammo demo`: generate an archive, ingest it through Dagster, then turn the
active-learning loop with a simulated labeler and score each model."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time
from collections import Counter
from pathlib import Path

from ..core.home import ENV_HOME, ENV_RETRAIN_EVERY, Home
from ..core.imaging.decode import DEFAULT_OVERSAMPLE
from ..core.imaging.preprocess import INPUT_SIZE
from .common import CliError, home_of, int_in, seed_type, size_type, studies_type
from .demo_report import counts, print_loop, report_model, score, turn_summary
from .synth import cmd_synth
from .thumbnails import cmd_thumbnails

#: The demo's size: the default fits a coffee break on 2 cores; ``--full`` is the
#: larger run (a better model, about twice as long). An option given explicitly wins.
QUICK = {"studies": 60, "labels": 60, "per_round": 60, "epochs": 12}
FULL = {"studies": 100, "labels": 100, "per_round": 100, "epochs": 16}


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="run the pipeline end to end on generated data",
        description=f"Generate a small synthetic archive under ${ENV_HOME} "
        "(default ./data) and run everything that exists on it.",
    )
    p.add_argument("--home", help=f"data folder (default ${ENV_HOME} or ./data)")
    p.add_argument(
        "--full",
        action="store_true",
        help="the larger run: {studies} studies, {labels} labels then {per_round} per turn, "
        "{epochs} epochs (default: {q[studies]}, {q[labels]}, {q[per_round]}, "
        "{q[epochs]})".format(**FULL, q=QUICK).replace("%", "%%"),
    )
    p.add_argument(
        "--studies",
        type=studies_type,
        default=None,
        help=f"studies in the synthetic archive (default {QUICK['studies']}; "
        f"--full {FULL['studies']})",
    )
    p.add_argument("--seed", type=seed_type, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=size_type, default=512, help="thumbnail long side (default 512)")
    p.add_argument("--workers", type=int_in(1, 256), default=2, help="worker processes (default 2)")
    p.add_argument(
        "--labels",
        type=int_in(0, 1_000_000),
        default=None,
        help="images a simulated labeler labels (from the ground truth, through the "
        f"labeler's API) before the first model (0: ingest only; default {QUICK['labels']}; "
        f"--full {FULL['labels']})",
    )
    p.add_argument(
        "--rounds",
        type=int_in(0, 100),
        default=2,
        help="turns of the active-learning loop after the first model (default 2)",
    )
    p.add_argument(
        "--per-round",
        type=int_in(1, 1_000_000),
        default=None,
        help="labels per turn, taken in the new model's labeling_queue order (default "
        f"{QUICK['per_round']}; --full {FULL['per_round']}); "
        "the demo sets $MAMMO_RETRAIN_EVERY (the sensor's own default is 50) to the smaller "
        "of --labels and --per-round",
    )
    p.add_argument(
        "--epochs",
        type=int_in(1, 200),
        default=None,
        help=f"training epochs (default {QUICK['epochs']}; --full {FULL['epochs']})",
    )
    p.add_argument(
        "--input-size",
        type=int_in(32, 1024),
        default=INPUT_SIZE,
        help=f"model input (default {INPUT_SIZE})",
    )
    p.set_defaults(func=cmd_demo)


_START = time.monotonic()


def elapsed() -> str:
    """The demo's clock, for its stage lines: ``[m:ss]``."""
    s = int(time.monotonic() - _START)
    return f"[{s // 60}:{s % 60:02d}]"


def resolve_size(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with the demo's size filled in: what was given, else ``--full``'s or the
    quick default."""
    base = FULL if args.full else QUICK
    given = {k: getattr(args, k) for k in base if getattr(args, k) is not None}
    return argparse.Namespace(**(vars(args) | base | given))


def cmd_demo(args: argparse.Namespace) -> int:
    global _START
    _START = time.monotonic()
    args = resolve_size(args)
    home = home_of(args)
    print(f"mammo demo in {home.root} (set {ENV_HOME} to use another folder)")
    truth = _synthesize(args, home)
    try:
        from ..pipeline import materialize_ingest  # noqa: F401  (is Dagster installed?)
    except ImportError:  # an install without the `pipeline` extra: the core alone
        cmd_thumbnails(
            argparse.Namespace(
                folder=home.drop("demo"),
                out=home.thumbnails,
                size=args.size,
                workers=args.workers,
                quiet=args.quiet,
                oversample=DEFAULT_OVERSAMPLE,
            )
        )
        print("Ran generate -> thumbnails with the core (Dagster is not installed).")
        return 0
    _ingest(args, home)
    if args.labels:
        _demo_model(args, home, truth)
    print(f"{elapsed()} demo done")
    print(
        "Next: `make dev` (Dagster UI on http://127.0.0.1:3000, labeler on "
        "http://127.0.0.1:5001) to look at the assets, runs and images."
    )
    return 0


def _synthesize(args: argparse.Namespace, home: Home) -> Path:
    """The demo's archive in the drop `demo` (once); returns its ground truth, kept
    outside the drop the pipeline scans."""
    drop, truth = home.drop("demo"), home.ground_truth("demo")
    if not truth.exists() and drop.exists() and any(drop.iterdir()):
        raise CliError(
            f"{drop} has files but no ground truth (an interrupted demo?): "
            "remove that folder and run the demo again"
        )
    if truth.exists():
        print(f"synthetic archive already in {drop}")
        return truth
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
    return truth


def _ingest(args: argparse.Namespace, home: Home) -> None:
    """dicom_index and thumbnails of the drop through Dagster, recorded in its instance."""
    from ..pipeline import materialize_ingest

    print(
        f"{elapsed()} ingesting drop 'demo' through Dagster (runs recorded in {home.dagster}) ..."
    )
    result = materialize_ingest(
        home, "demo", size=args.size, workers=args.workers, dagster_home=home.dagster
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
        f"thumbnails: {made['rendered'].value} rendered, {made['cached'].value} cached "
        f"-> {home.thumbnails}"
    )
    print(
        "checks: "
        + ", ".join(f"{c.check_name} {'passed' if c.passed else 'FAILED'}" for c in checks)
    )


def _demo_model(args: argparse.Namespace, home: Home, truth: Path) -> None:
    """The active-learning loop on generated data: a simulated labeler labels through the
    labeler's HTTP API; `active_learning_sensor` asks for a retrain; the new model's
    predictions and queue follow (`new_model_sensor`); the next labels come from that
    queue. Each turn is scored against the generator's ground truth."""
    from labeler.process import running

    from ..core.learning.simulated import SimulatedLabeler
    from ..core.store import queries
    from ..core.store.db import Store
    from ..core.store.labels import load_events
    from ..core.synthetic.truth import read_ground_truth

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
                    f"{elapsed()} turn {turn + 1}: labels: {got} images labeled by a "
                    f"simulated labeler through the labeler's API ({counts(sources)})"
                )
            cursor, skipped = _retrain(args, home, cursor)
            if skipped and summary:
                continue  # no new model: nothing new to score
            summary.append(turn_summary(home, store, answers))
            if summary[-1][0] == "-":
                raise CliError(
                    f"no model after turn {turn + 1}: {n} labels asked for, fewer were "
                    "labeled (a small archive?); try more --studies or fewer --labels"
                )
            if turn + 1 < len(batches):
                version = summary[-1][0]  # the next labels come from its queue
                labeler.wait_model(version, queued=bool(queries.queued_count(store, version)))
    if len(summary) > 1 or not kept:
        print_loop(summary)
    if home.study_csv.exists():
        score(home.study_csv, rows)


def _retrain(args: argparse.Namespace, home: Home, cursor: str | None) -> tuple:
    """One tick of the sensors as the daemon would run them (a retrain, then predictions
    and the study CSV), each run reported. Returns (the sensor's cursor, its skip
    reason or None)."""
    from ..pipeline import turn_loop

    size = args.input_size
    print(f"{elapsed()} ticking active_learning_sensor (a retrain at {size} px takes a few "
          "minutes on 2 cores) ...", flush=True)  # fmt: skip
    training = {"size": size, "epochs": args.epochs}
    runs, cursor, skipped = turn_loop(
        home, dagster_home=home.dagster, training=training, cursor=cursor
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
        report_model(retrain)
    if not any(r.job == "study_csv" for r in runs) and not skipped:
        raise CliError("no study CSV was written (no drop has predictions?)")
    return cursor, skipped
