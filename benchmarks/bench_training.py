"""Training time and held-out accuracy for ~500 labeled synthetic images, per input size.

Generates a synthetic archive (full vendor matrices by default: with
`--matrix small` clips and coils shrink to a pixel or two and cannot be
learned), ingests it with the core (index + 512-px thumbnails), labels every image from
the ground truth, and trains the model the pipeline trains (fastai ResNet18,
from scratch unless ImageNet weights are cached) at each input size, on the same
split. Reports wall time on this machine, and per flag on the locked hold-out
patients (never trained on): accuracy at the chosen threshold (target recall
0.98 on validation), AUC, and missed positives.

    python benchmarks/bench_training.py [--studies 90] [--sizes 224] [--matrix full]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DATA = RESULTS / "data"


def prepare(studies: int, matrix: str) -> tuple[Path, int]:
    from mammo_dagster.core.batch import thumbnail_folder
    from mammo_dagster.core.index import index_folder, mark_duplicates, save_index
    from mammo_dagster.core.labels import append_events, load_events
    from mammo_dagster.core.store import DB_NAME, Store
    from mammo_dagster.core.synthetic import generate_archive, read_ground_truth, truth_labels

    home = DATA / f"training_{studies}" if matrix == "small" else DATA / f"training_{studies}_full"
    store = Store(home / DB_NAME)
    if not (home / "done").exists():
        print(f"  generating and ingesting {studies} studies ...", file=sys.stderr, flush=True)
        drop = home / "incoming" / "d1"
        generate_archive(
            drop, studies=studies, seed=21, size="small", ground_truth=home / "truth.csv"
        )
        store.migrate()
        save_index(store, "d1", mark_duplicates(index_folder(drop, "d1", workers=2), {}))
        thumbnail_folder(drop, home / "thumbnails", size=512, workers=2)
        (home / "done").write_text("")
    if not load_events(store):
        append_events(store, truth_labels(read_ground_truth(home / "truth.csv")))
    return home, len(load_events(store))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=90)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224])
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument(
        "--matrix",
        choices=["small", "full"],
        default="full",
        help="full vendor matrices (markers as small as in real images) or 1/8 (quick)",
    )
    args = ap.parse_args()

    import os

    os.environ.setdefault("MAMMO_PATIENT_SALT", "bench-salt")
    from mammo_dagster.core.dataset import build_snapshot
    from mammo_dagster.core.store import DB_NAME, Store
    from mammo_dagster.core.train import TrainConfig, train

    home, labeled = prepare(args.studies, args.matrix)
    snapshot = build_snapshot(Store(home / DB_NAME), home / "thumbnails")
    counts = snapshot.counts()
    print(
        f"{labeled} labeled images: train {counts['train']['images']}, valid "
        f"{counts['valid']['images']}, hold-out {counts['holdout']['images']} "
        f"({counts['holdout']['patients']} patients)",
        flush=True,
    )
    rows = []
    for size in args.sizes:
        t0 = time.perf_counter()
        card = train(
            snapshot, home / "models" / f"s{size}", TrainConfig(size=size, epochs=args.epochs)
        )
        minutes = (time.perf_counter() - t0) / 60
        row = {"size": size, "minutes": round(minutes, 2), "best_epoch": card["best_epoch"],
               "pretrained": card["pretrained"], "holdout": card["holdout"],
               "validation": card["validation"]}  # fmt: skip
        rows.append(row)
        parts = []
        for flag, r in card["holdout"].items():
            c = r["confusion"]
            parts.append(
                f"{flag}: acc {r['accuracy']:.1%} AUC {r['auc'] or float('nan'):.3f} "
                f"missed {c['fn']}/{r['positives']}"
            )
        print(f"{size:4d} px: {minutes:4.1f} min to train ({labeled} labels); hold-out "
              + " | ".join(parts), flush=True)  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"training_{args.matrix}.json").write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
