"""Where the 98%-recall threshold sits: on the last needed positive vs halfway below it.

Trains the pipeline's model (`core.model.train.train`, from scratch) on random label sets
of a few sizes drawn from the active-learning benchmark's archive, scores the
validation split and the locked hold-out with the exported ONNX model, and compares
two rules that flag exactly the same validation images:
- edge: the score of the last positive the target recall needs (the rule before);
- middle: halfway in logit space from there to the next lower score
  (`core.metrics.threshold_for_recall`, the rule now).
Reports hold-out recall, precision and accuracy per flag for each, summed over runs.

    python benchmarks/bench_thresholds.py [--labels 100 200 300] [--seeds 0 1 2] [--doc-only]

Results go to results/thresholds.json; the table to docs/benchmarks/thresholds.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_active_learning import RESULTS, examples, prepare, stack  # the same folder
from pages import measured, table, write_section


def edge_threshold(y: np.ndarray, p: np.ndarray, recall: float) -> float:
    pos = np.sort(p[y])[::-1]
    if not len(pos):
        return 0.5
    return float(pos[max(1, int(np.ceil(recall * len(pos)))) - 1])


def write_doc(saved: dict) -> None:
    args, summary = saved["args"], saved["summary"]
    runs = len(args["labels"]) * len(args["seeds"])
    body = [
        (flag, rule + (" (now)" if rule == "middle" else " (before)"), f"{c['recall']:.3f}",
         f"{c['precision']:.3f}", f"{c['accuracy']:.3f}", c["fn"], c["fp"])
        for key, c in summary.items()
        for flag, rule in [key.split("/")]
    ]  # fmt: skip
    text = (
        f"{runs} models ({' / '.join(map(str, args['labels']))} random labels × seeds "
        f"{', '.join(map(str, args['seeds']))}; {args['size']}-px input, {args['epochs']} "
        f"epochs), each threshold for {args['recall']:.0%} recall on the model's own "
        f"validation split, the hold-out ({saved['holdout']} images) summed over the models:"
        "\n\n"
        + table(
            ["flag", "rule", "recall", "precision", "accuracy", "missed", "false alarms"], body
        )  # fmt: skip
    )
    write_section("thresholds.md", "bench_thresholds", text, when=saved.get("measured"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=240)
    ap.add_argument("--labels", type=int, nargs="+", default=[100, 200, 300])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--recall", type=float, default=0.98)
    ap.add_argument("--doc-only", action="store_true", help="rewrite the page from the results")
    args = ap.parse_args()
    if args.doc_only:
        write_doc(json.loads((RESULTS / "thresholds.json").read_text()))
        return 0
    os.environ.setdefault("MAMMO_PATIENT_SALT", "bench-salt")
    from mammo_dagster.core.imaging import preprocess
    from mammo_dagster.core.metrics import at_threshold, threshold_for_recall
    from mammo_dagster.core.model.dataset import Snapshot
    from mammo_dagster.core.model.train import TrainConfig, train
    from mammo_dagster.core.prediction.onnx_model import OnnxModel

    every = examples(prepare(args.studies, "small", 128))
    holdout = [e for e in every if e.split == "holdout"]
    pool = [e for e in every if e.split != "holdout"]

    inputs = {(e.sop_instance_uid, e.frame): preprocess.load_input(e.thumbnail, args.size)
              for e in every}  # fmt: skip

    def truth(exs: list) -> np.ndarray:
        return np.array([[e.biopsy, e.mag] for e in exs], bool)

    hold_x, hold_y = stack(inputs, holdout), truth(holdout)
    totals: dict = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.labels:
            for seed in args.seeds:
                rng = np.random.default_rng(1000 * seed + n)
                labeled = [pool[i] for i in rng.choice(len(pool), n, replace=False)]
                valid = [e for e in labeled if e.split == "valid"]
                out = Path(tmp) / f"{n}_{seed}"
                train(Snapshot(labeled + holdout, 0, n, 0), out,
                      TrainConfig(size=args.size, epochs=args.epochs, seed=seed))  # fmt: skip
                model = OnnxModel(out / "model.onnx")
                vp, hp = model.probs(*stack(inputs, valid)), model.probs(*hold_x)
                vy = truth(valid)
                for k, flag in enumerate(preprocess.FLAGS):
                    for rule, fn in (("edge", edge_threshold), ("middle", threshold_for_recall)):
                        t = fn(vy[:, k], vp[:, k], args.recall)
                        got = at_threshold(hold_y[:, k], hp[:, k], t)["confusion"]
                        c = totals.setdefault((flag, rule), {"tp": 0, "fp": 0, "fn": 0, "tn": 0})
                        for cell, count in got.items():
                            c[cell] += count
                        rows.append({"labels": n, "seed": seed, "flag": flag, "rule": rule,
                                     "threshold": t, "missed": got["fn"],
                                     "false_alarms": got["fp"]})  # fmt: skip
                print(f"  {n} labels, seed {seed}: {len(valid)} validation images", flush=True)
    runs = len(args.labels) * len(args.seeds)
    print(f"\nhold-out ({len(holdout)} images) summed over {runs} models; thresholds for "
          f"{args.recall:.0%} recall on each model's validation split:")  # fmt: skip
    print(f"{'flag':7s} {'rule':7s} {'recall':>7s} {'precision':>9s} {'accuracy':>8s} "
          f"{'missed':>6s} {'false alarms':>12s}")  # fmt: skip
    summary = {}
    for (flag, rule), c in totals.items():
        n_all = sum(c.values())
        rec = c["tp"] / max(1, c["tp"] + c["fn"])
        prec = c["tp"] / max(1, c["tp"] + c["fp"])
        acc = (c["tp"] + c["tn"]) / max(1, n_all)
        summary[f"{flag}/{rule}"] = c | {"recall": rec, "precision": prec, "accuracy": acc}
        print(f"{flag:7s} {rule:7s} {rec:7.3f} {prec:9.3f} {acc:8.3f} {c['fn']:6d} {c['fp']:12d}")
    RESULTS.mkdir(exist_ok=True)
    saved = {"args": vars(args), "summary": summary, "runs": rows, "holdout": len(holdout),
             "measured": measured()}  # fmt: skip
    (RESULTS / "thresholds.json").write_text(json.dumps(saved, indent=1))
    write_doc(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
