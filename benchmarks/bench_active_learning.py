"""Label efficiency: uncertainty sampling vs random sampling, same archive, same hold-out.

A simulated labeler answers from the synthetic ground truth. Starting from the
same random labels (per seed), each round trains the pipeline's model
(`core.model.train.train`, from scratch), scores the unlabeled images with the exported
ONNX model, and labels the next batch that the strategy (`core.learning.active`) picks.
Every model is evaluated on the locked hold-out patients, which no strategy can
pick. Output: a table, `results/active_learning.json` (`--out`), and a PNG plot of per-flag
accuracy, balanced accuracy and AUC vs labels (`--plot`, default docs/active_learning.png),
the positives each strategy has labeled, and the labels each needs to reach the target
per-label accuracy (plain and balanced: where a flag is rare, as in `--mix screening`,
plain accuracy rewards a model that flags nothing).

    python benchmarks/bench_active_learning.py [--seeds 0 1] [--stop 500] [--size 96]
        [--then 100 --until 1000]  # longer: rounds of 100 after 500
        [--strategies uncertainty --combine max --explore 0.1]  # a variant on its own
        [--mix screening --studies 600]  # rare flags, as in a screening practice's archive
        [--doc-only]  # rewrite this run's page section from its results (same --out)

Each run (named by its --out) writes its section of docs/benchmarks/active_learning.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from pages import RESULTS, measured, table, write_section  # noqa: E402

DATA = RESULTS / "data"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def prepare(studies: int, matrix: str, thumb: int, mix: str = "enriched") -> Path:
    """A cached synthetic archive, indexed, with thumbnails and its ground truth."""
    from mammo_dagster.core.home import Home
    from mammo_dagster.core.imaging.batch import thumbnail_folder
    from mammo_dagster.core.imaging.index import ingest_drop
    from mammo_dagster.core.synthetic.archive import generate_archive

    home = DATA / (f"al_{studies}_{matrix}_{thumb}" + ("" if mix == "enriched" else f"_{mix}"))
    if not (home / "done").exists():
        print(f"  generating and ingesting {studies} studies ...", file=sys.stderr, flush=True)
        drop = home / "incoming" / "d1"
        generate_archive(
            drop, studies=studies, seed=41, size=matrix, ground_truth=home / "truth.csv", mix=mix
        )
        ingest_drop(Home(home), "d1", workers=2)
        (home / "done").write_text("")
    # cached when current; re-rendered after a change of the rendering contract
    thumbnail_folder(home / "incoming" / "d1", home / "thumbnails", size=thumb, workers=2)
    return home


def examples(home: Path) -> list:
    """Every image with a thumbnail, labeled from the ground truth, with its split."""
    from mammo_dagster.core.imaging.batch import thumbnail_name
    from mammo_dagster.core.model.dataset import Example
    from mammo_dagster.core.model.splits import split_of
    from mammo_dagster.core.store.db import DB_NAME, Store
    from mammo_dagster.core.synthetic.truth import read_ground_truth

    truth = {t.sop_instance_uid: t for t in read_ground_truth(home / "truth.csv")}
    rows = Store(home / DB_NAME).query(
        "SELECT sop_instance_uid, frame, patient_key, study_instance_uid, manufacturer "
        "FROM indexed_frames ORDER BY sop_instance_uid, frame"
    )
    out = []
    for sop, frame, patient, study, vendor in rows:
        thumb = home / "thumbnails" / thumbnail_name(sop, frame)
        if sop in truth and thumb.is_file():
            t = truth[sop]
            out.append(
                Example(
                    sop,
                    frame,
                    str(thumb),
                    t.has_biopsy_tool,
                    t.has_mag_view,
                    split_of(patient, study),
                    patient,
                    study,
                    vendor or "",
                )  # fmt: skip
            )
    return out


def evaluate(y: np.ndarray, p: np.ndarray, thresholds: dict) -> dict:
    from mammo_dagster.core import metrics
    from mammo_dagster.core.imaging.preprocess import FLAGS

    out = {}
    for k, flag in enumerate(FLAGS):
        at = metrics.at_threshold(y[:, k], p[:, k], 0.5)
        tn, fp = at["confusion"]["tn"], at["confusion"]["fp"]
        specificity = tn / (tn + fp) if tn + fp else None
        out[flag] = {
            "accuracy": at["accuracy"],
            # a rare flag: accuracy rewards flagging nothing; this mean of the two does not
            "balanced_accuracy": None
            if at["recall"] is None or specificity is None
            else (at["recall"] + specificity) / 2,
            "recall": at["recall"],
            "accuracy_at_threshold": metrics.at_threshold(y[:, k], p[:, k], thresholds[flag])[
                "accuracy"
            ],
            "auc": metrics.auc(y[:, k], p[:, k]),
        }
    out["both"] = {"accuracy": float(np.mean(((p >= 0.5) == y).all(axis=1)))}
    return out


def stack(inputs: dict, examples: list) -> tuple[np.ndarray, np.ndarray | None]:
    """Model inputs of these examples: images, and their patches where every one has them
    (contract v3 thumbnails: the second look reads them)."""
    got = [inputs[(e.sop_instance_uid, e.frame)] for e in examples]
    images = np.stack([image for image, _ in got])
    if any(patches is None for _, patches in got):
        return images, None
    return images, np.stack([patches for _, patches in got])


def run_loop(name, pool, holdout, inputs, args, seed: int, work: Path) -> list[dict]:
    """One strategy's active-learning curve."""
    from mammo_dagster.core.learning.active import Candidate, strategy, uncertainty
    from mammo_dagster.core.model.dataset import Snapshot
    from mammo_dagster.core.model.train import TrainConfig, train
    from mammo_dagster.core.prediction.onnx_model import OnnxModel

    chooser = strategy(name, explore=args.explore, per_study=args.per_study)
    rng = np.random.default_rng(seed)
    schedule = args.schedule
    labeled = [pool[i] for i in sorted(rng.choice(len(pool), schedule[0], replace=False))]
    y_hold = np.array([[e.biopsy, e.mag] for e in holdout], np.float32)
    hold_x = stack(inputs, holdout)
    curve, round_no = [], 0
    while True:
        model = None
        if len(labeled) >= args.train_from:  # below it (random only) picks need no model
            t0 = time.perf_counter()
            snapshot = Snapshot(labeled + holdout, 0, len(labeled), 0)
            out = work / f"{name}_{seed}_{round_no}"
            config = TrainConfig(size=args.size, epochs=args.epochs, seed=seed)
            card = train(snapshot, out, config)
            model = OnnxModel(out / "model.onnx")
            result = evaluate(y_hold, model.probs(*hold_x), card["thresholds"])
            found = {"biopsy": sum(e.biopsy for e in labeled), "mag": sum(e.mag for e in labeled)}
            curve.append(
                {"labels": len(labeled), "seconds": round(time.perf_counter() - t0, 1)}
                | {"labeled_positives": found}
                | result
            )
            b, m = result["biopsy"], result["mag"]
            print(f"  {name:11s} seed {seed} {len(labeled):4d} labels: biopsy acc "
                  f"{b['accuracy']:.3f} AUC {b['auc'] or 0:.3f} | mag acc {m['accuracy']:.3f} "
                  f"AUC {m['auc'] or 0:.3f}; labeled positives {found['biopsy']} biopsy "
                  f"{found['mag']} mag ({curve[-1]['seconds']:.0f} s)", flush=True)  # fmt: skip
        if round_no + 1 >= len(schedule):
            break
        taken = {(e.sop_instance_uid, e.frame) for e in labeled}
        rest = [e for e in pool if (e.sop_instance_uid, e.frame) not in taken]
        if not rest:
            break
        if model is None:
            scores = np.zeros(len(rest))
        else:
            probs = model.probs(*stack(inputs, rest))
            scores = uncertainty(probs, combine=args.combine)
        candidates = [
            Candidate(e.sop_instance_uid, e.frame, e.study_instance_uid, e.manufacturer, float(s))
            for e, s in zip(rest, scores, strict=True)
        ]
        by_key = {(e.sop_instance_uid, e.frame): e for e in rest}
        picks = chooser.select(candidates, schedule[round_no + 1] - len(labeled), seed + round_no)
        labeled += [by_key[(p.candidate.sop_instance_uid, p.candidate.frame)] for p in picks]
        round_no += 1
    return curve


def _rounds(start: int, stop: int, step: int) -> list[int]:
    """Label counts from `start` to `stop` (both included) in steps of `step`."""
    out = list(range(start, stop + 1, max(step, 1)))
    return out if out[-1] == stop else [*out, stop]


def flat(curve: list[dict]) -> list[dict]:
    """One seed's curve with mean_curve's keys (biopsy_accuracy, both_accuracy, ...)."""
    return mean_curve([curve])


def mean_curve(curves: list[list[dict]]) -> list[dict]:
    out = []
    for rows in zip(*curves, strict=False):
        entry = {"labels": rows[0]["labels"]}
        for flag in ("biopsy", "mag"):
            for metric in ("accuracy", "balanced_accuracy", "accuracy_at_threshold", "auc",
                           "recall"):  # fmt: skip
                vals = [r[flag].get(metric) for r in rows]
                vals = [v for v in vals if v is not None]
                entry[f"{flag}_{metric}"] = float(np.mean(vals)) if vals else None
            found = [r["labeled_positives"][flag] for r in rows if "labeled_positives" in r]
            entry[f"{flag}_labeled_positives"] = float(np.mean(found)) if found else None
        entry["both_accuracy"] = float(np.mean([r["both"]["accuracy"] for r in rows]))
        out.append(entry)
    return out


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def labels_to_reach(curve: list[dict], key: str, target: float) -> int | None:
    return next((r["labels"] for r in curve if (r[key] or 0) >= target), None)


def plot(means: dict, target: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("accuracy", "hold-out accuracy (p >= 0.5)")]
    if any(r.get("biopsy_balanced_accuracy") is not None for c in means.values() for r in c):
        panels.append(("balanced_accuracy", "balanced accuracy (p >= 0.5)"))
    panels.append(("auc", "hold-out AUC"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), sharex=True)
    styles = {"uncertainty": "-o", "random": "--s"}
    for flag, color in (("biopsy", "tab:red"), ("mag", "tab:blue")):
        for name, curve in means.items():
            x = [r["labels"] for r in curve]
            label = f"{flag}, {name}"
            for ax, (metric, _) in zip(axes, panels, strict=True):
                ys = [r.get(f"{flag}_{metric}") for r in curve]
                ys = [np.nan if v is None else v for v in ys]
                ax.plot(x, ys, styles[name], color=color, label=label, ms=4)
    for ax, (metric, heading) in zip(axes, panels, strict=True):
        ylabel = "AUC" if metric == "auc" else metric.replace("_", " ")
        ax.set(title=heading, xlabel="labels", ylabel=ylabel)
        if metric == "auc":
            ax.set_ylim(0.4, 1.01)
        else:
            ax.axhline(target, color="gray", lw=0.8, ls=":")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def _cell(row: dict, flag: str) -> str:
    """accuracy / balanced accuracy (AUC) at p >= 0.5."""
    return (
        f"{_num(row[f'{flag}_accuracy'], '.3f')} / {_num(row[f'{flag}_balanced_accuracy'], '.2f')}"
        f" ({_num(row[f'{flag}_auc'], '.2f')})"
    )


def write_doc(saved: dict, name: str) -> None:
    """This run's section of docs/benchmarks/active_learning.md (one per --out name)."""
    means, reach, info = saved["means"], saved["labels_to_target"], saved["setting"]
    names = list(means)
    target = float(saved["args"]["target"])
    text = (
        f"`{info['command']}`\n\n"
        f"{info['mix']} mix: {info['pool']} images to pick from ({info['pool_biopsy']} with a "
        f"marker, {info['pool_mag']} mag views); {info['holdout']} hold-out images "
        f"({info['holdout_patients']} patients, {info['holdout_biopsy']} with a marker, "
        f"{info['holdout_mag']} mag views); {info['size']}-px input, {info['epochs']} epochs, "
        f"mean of {info['seeds']} seed(s); {saved['minutes']} minutes.\n\n"
        f"Labels needed to reach {target:.0%} hold-out accuracy (p ≥ 0.5) on the mean curve:"
        "\n\n"
    )
    rows = []
    for key, by in reach.items():
        label = key.removesuffix("_accuracy").replace("_balanced", " (balanced accuracy)")
        u, r = by.get("uncertainty"), by.get("random")
        share = f"{u / r:.0%}" if isinstance(u, int) and isinstance(r, int) else "–"
        rows.append((label, *(by.get(n) or "not reached" for n in names), share))
    text += table(["measure", *names, "uncertainty / random"], rows)
    text += (
        "\n\nEach cell is accuracy / balanced accuracy (AUC) at p ≥ 0.5; the last columns "
        "count the marker images / mag views among the labels:\n\n"
    )
    head = ["labels"] + [f"{n}: {f}" for n in names for f in ("biopsy", "mag")]
    head += [f"{n}: labeled" for n in names]
    body = []
    for rows_at in zip(*(means[n] for n in names), strict=False):
        cells = [rows_at[0]["labels"]]
        cells += [_cell(r, f) for r in rows_at for f in ("biopsy", "mag")]
        cells += [
            " / ".join(_num(r[f"{f}_labeled_positives"], ".0f") for f in ("biopsy", "mag"))
            for r in rows_at
        ]
        body.append(cells)
    text += table(head, body)
    plot = info.get("plot")
    if plot and Path(plot).resolve().is_relative_to(DOCS):
        rel = Path(plot).resolve().relative_to(DOCS)
        text += f"\n\n![hold-out accuracy vs labels, {' vs '.join(names)}](../{rel.as_posix()})"
    write_section("active_learning.md", "bench_active_learning", text,
                  part=Path(saved["args"]["out"]).stem, when=saved.get("measured"))  # fmt: skip


def main() -> int:
    from mammo_dagster.core.synthetic.mixes import MIXES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=160)
    ap.add_argument("--matrix", choices=["small", "full"], default="small")
    ap.add_argument(
        "--mix", choices=list(MIXES), default="enriched",
        help="study mix of the archive (core.synthetic.mixes): enriched ~30%% marker / ~25%% "
        "mag images; screening ~6%% / ~5%%, as a screening practice's archive",
    )  # fmt: skip
    ap.add_argument("--thumb", type=int, default=128, help="thumbnail size")
    ap.add_argument("--size", type=int, default=96, help="model input size")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--start", type=int, default=50)
    ap.add_argument("--step", type=int, default=50)
    ap.add_argument("--stop", type=int, default=500)
    ap.add_argument(
        "--then", type=int, default=0,
        help="after --stop, continue in rounds of this many labels ... (0: stop there)",
    )  # fmt: skip
    ap.add_argument("--until", type=int, default=1000, help="... up to this many labels")
    ap.add_argument("--target", type=float, default=0.97)
    ap.add_argument(
        "--train-from", type=int, default=0,
        help="random only: replay the picks of the rounds below this many labels without "
        "training, to extend a curve cheaply (the same picks as a full run with the same "
        "--studies --mix --thumb --start --step --stop --seeds); labels to target then count "
        "trained rounds only, so the first one reads 'at most'",
    )  # fmt: skip
    ap.add_argument("--strategies", nargs="+", default=["uncertainty", "random"],
                    choices=["uncertainty", "random"])  # fmt: skip
    ap.add_argument("--explore", type=float, default=0.2, help="uncertainty: random share")
    ap.add_argument("--per-study", type=int, default=2, help="uncertainty: picks per study")
    ap.add_argument("--combine", choices=["mean", "max"], default="mean",
                    help="uncertainty: how the two flags' entropies make one score")  # fmt: skip
    ap.add_argument(
        "--plot", type=Path, default=None,
        help="PNG plot (default docs/active_learning.png; one strategy: beside --out)",
    )  # fmt: skip
    ap.add_argument(
        "--out", type=Path, default=None,
        help="results JSON (default results/active_learning.json; one strategy: "
        "results/active_learning.<strategy>_only.json); the checkpoint sits beside it",
    )  # fmt: skip
    ap.add_argument("--doc-only", action="store_true",
                    help="rewrite this run's page section from its results")  # fmt: skip
    ap.add_argument(
        "--report-partial", action="store_true",
        help="no training: report the seeds an interrupted run finished (same options)",
    )  # fmt: skip
    args = ap.parse_args()
    if not 0 < args.start <= args.stop:
        ap.error("--start must be positive and at most --stop")
    if not 0 <= args.explore <= 1 or args.per_study < 1:
        ap.error("--explore must be in [0, 1] and --per-study at least 1")
    if args.train_from and args.strategies != ["random"]:
        ap.error("--train-from replays random picks only: use it with --strategies random")
    args.schedule = _rounds(args.start, args.stop, args.step)
    if args.then and args.until > args.stop:
        args.schedule += _rounds(args.stop, args.until, args.then)[1:]
    if args.train_from > args.schedule[-1]:
        ap.error(f"--train-from {args.train_from} is past the last round ({args.schedule[-1]})")
    if args.doc_only:
        out = args.out or RESULTS / (
            "active_learning.json" if len(args.strategies) > 1
            else f"active_learning.{args.strategies[0]}_only.json"
        )  # fmt: skip
        write_doc(json.loads(out.read_text()), out.stem)
        return 0
    command = " ".join(["python benchmarks/bench_active_learning.py", *sys.argv[1:]])
    os.environ.setdefault("MAMMO_PATIENT_SALT", "bench-salt")
    from mammo_dagster.core.imaging import preprocess

    home = prepare(args.studies, args.matrix, args.thumb, args.mix)
    every = examples(home)
    holdout = [e for e in every if e.split == "holdout"]
    pool = [e for e in every if e.split != "holdout"]
    print(f"{len(pool)} images to pick from ({sum(e.biopsy for e in pool)} with a marker, "
          f"{sum(e.mag for e in pool)} mag), {len(holdout)} hold-out images "
          f"({len({e.patient_key for e in holdout})} patients, {sum(e.biopsy for e in holdout)} "
          f"marker, {sum(e.mag for e in holdout)} mag); {args.mix} mix; rounds at "
          f"{' '.join(map(str, args.schedule))} labels; {args.size} px, {args.epochs} epochs; "
          f"seeds {args.seeds}", flush=True)  # fmt: skip
    inputs = {(e.sop_instance_uid, e.frame): preprocess.load_input(e.thumbnail, args.size)
              for e in every}  # fmt: skip
    curves: dict[str, list] = {name: [] for name in args.strategies}
    both = len(curves) > 1
    if args.out is None:
        args.out = RESULTS / ("active_learning.json" if both else
                              f"active_learning.{args.strategies[0]}_only.json")  # fmt: skip
    if args.plot is None:  # a variant on its own does not replace the README's plot
        args.plot = DOCS / "active_learning.png" if both else args.out.with_suffix(".png")
    partial = args.out.with_suffix(".partial.json")
    t0 = time.perf_counter()
    if args.report_partial:
        if not partial.is_file():
            ap.error(f"no interrupted run to report: {partial} does not exist")
        saved = json.loads(partial.read_text())
        curves = {name: saved[name] for name in args.strategies if name in saved}
        if not curves:
            ap.error(f"{partial} holds none of {args.strategies}")
        args.seeds = args.seeds[: min(map(len, curves.values()))]
        curves = {name: c[: len(args.seeds)] for name, c in curves.items()}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for seed in args.seeds:
                for name in curves:
                    curve = run_loop(name, pool, holdout, inputs, args, seed, Path(tmp))
                    curves[name].append(curve)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                partial.write_text(json.dumps(curves, indent=1))  # survives an interruption
    means = {name: mean_curve(c) for name, c in curves.items()}
    if {"uncertainty", "random"} <= set(means):
        print(f"\nmean over {len(args.seeds)} seed(s), hold-out accuracy at p >= 0.5 (AUC):")
        head = ("uncertainty biopsy", "mag", "random biopsy", "mag")
        print(f"{'labels':>6} | {head[0]:>18} {head[1]:>13} | {head[2]:>18} {head[3]:>13}")
        for u, r in zip(means["uncertainty"], means["random"], strict=True):
            cells = [f"{row[f'{f}_accuracy']:.3f} ({row[f'{f}_auc'] or 0:.2f})" for row in (u, r)
                     for f in ("biopsy", "mag")]  # fmt: skip
            print(f"{u['labels']:6d} | {cells[0]:>18} {cells[1]:>13} | {cells[2]:>18} "
                  f"{cells[3]:>13}")  # fmt: skip
        print("\npositives among the labels (hold-out recall at p >= 0.5), mean:")
        print(f"{'labels':>6} | {head[0]:>18} {head[1]:>13} | {head[2]:>18} {head[3]:>13}")
        for u, r in zip(means["uncertainty"], means["random"], strict=True):
            cells = [f"{_num(row[f'{f}_labeled_positives'], '.0f')} "
                     f"({_num(row[f'{f}_recall'], '.2f')})"
                     for row in (u, r) for f in ("biopsy", "mag")]  # fmt: skip
            print(f"{u['labels']:6d} | {cells[0]:>18} {cells[1]:>13} | {cells[2]:>18} "
                  f"{cells[3]:>13}")  # fmt: skip
    keys = ("biopsy_accuracy", "mag_accuracy", "both_accuracy",
            "biopsy_balanced_accuracy", "mag_balanced_accuracy")  # fmt: skip
    first = min((n for n in args.schedule if n >= args.train_from), default=None)

    def reached(curve: list[dict], key: str) -> int | str | None:
        n = labels_to_reach(curve, key, args.target)
        # --train-from: the target may have been reached in a round that was not trained
        return f"<={n}" if n is not None and n == first and first > args.schedule[0] else n

    reach = {key: {name: reached(means[name], key) for name in means} for key in keys}
    print(f"\nlabels needed to reach {args.target:.0%} hold-out accuracy (mean curve):")
    for key, by in reach.items():
        u, r = by.get("uncertainty"), by.get("random")
        ratio = f" ({u / r:.0%} of random's)" if isinstance(u, int) and isinstance(r, int) else ""
        cells = ", ".join(f"{name} {n or 'not reached'}" for name, n in by.items())
        name = key.removesuffix("_accuracy").replace("_balanced", " (balanced accuracy)")
        print(f"  {name:6s}: {cells}{ratio}")
    per_seed = {
        key: {name: [reached(flat(c), key) for c in curves[name]] for name in curves}
        for key in keys
    }
    print("  per seed:", json.dumps(per_seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    setting = {
        "command": command, "mix": args.mix, "pool": len(pool),
        "pool_biopsy": sum(e.biopsy for e in pool), "pool_mag": sum(e.mag for e in pool),
        "holdout": len(holdout), "holdout_patients": len({e.patient_key for e in holdout}),
        "holdout_biopsy": sum(e.biopsy for e in holdout),
        "holdout_mag": sum(e.mag for e in holdout), "size": args.size,
        "epochs": args.epochs, "seeds": len(args.seeds), "plot": str(args.plot),
    }  # fmt: skip
    saved = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "setting": setting,
        "measured": measured(),
        "curves": curves,
        "means": means,
        "labels_to_target": reach,
        "labels_to_target_per_seed": per_seed,
        "minutes": None if args.report_partial else round((time.perf_counter() - t0) / 60, 1),
    }
    args.out.write_text(json.dumps(saved, indent=2))
    print(f"results: {args.out}")
    partial.unlink(missing_ok=True)
    plot(means, args.target, args.plot,
         f"{args.mix} mix: {len(pool)}-image pool, {len(holdout)} hold-out images, {args.size} px, "
         f"{args.epochs} epochs, mean of {len(args.seeds)} seed(s)")  # fmt: skip
    print(f"plot: {args.plot}")
    write_doc(saved, args.out.stem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
