"""Does averaging the mag score over flipped copies of the image (test-time augmentation)
make the mag flag hold better on archives never trained on? An experiment, not shipped.

The models are `bench_robustness.py`'s, of the shipped recipe (methods
`second-look-schedule`, `-seed1`, `-seed2`: trained there unless cached) and its
archives (generated there unless cached). Each model scores every shifted archive three
ways, side by side in one run, through its own fp32 ONNX graph:
- plain: the image as it comes (what ships);
- h: the mean mag logit of the image and its left-right mirror;
- hv4: the mean over the image and its three mirrors (left-right, up-down, both).
Training flips images both ways, so every copy is one the network learned from. Each
variant's threshold comes from the model's validation split scored the same way, by
the shipped rule (98% recall of images, `core.metrics.threshold_for_recall`).

    python benchmarks/bench_mag_flip.py [--methods ...] [--doc-only]

Results go to results/mag_flip.json; the table to docs/benchmarks/mag_flip.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from pages import RESULTS, measured, table, write_section  # noqa: E402

SEEDS = ["second-look-schedule", "second-look-schedule-seed1", "second-look-schedule-seed2"]
VARIANTS = {"plain": "as shipped", "h": "+ left-right mirror", "hv4": "+ all three mirrors"}
STUDY_AUC, IMAGE_AUC, RECALL = 0.995, 0.99, 0.98  # issue 16's floors for a flag


def mag_scores(model, images: list[np.ndarray], patches: list) -> dict[str, np.ndarray]:
    """The mag probability of each variant (`VARIANTS`)."""
    from mammo_dagster.core.metrics import logit

    copies = [images] + [
        [np.ascontiguousarray(flip(im)) for im in images]
        for flip in (np.fliplr, np.flipud, lambda a: a[::-1, ::-1])
    ]
    logits = [np.array([logit(p) for p in model.probs(c, patches)[:, 1]]) for c in copies]
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    return {"plain": sig(logits[0]), "h": sig((logits[0] + logits[1]) / 2),
            "hv4": sig(sum(logits) / 4)}  # fmt: skip


def run(methods: list[str]) -> dict:
    import bench_robustness as br

    from mammo_dagster.core import metrics
    from mammo_dagster.core.imaging.batch import thumbnail_name
    from mammo_dagster.core.prediction.onnx_model import OnnxModel
    from mammo_dagster.core.synthetic.realism import SHIFTS

    jobs = br.archive_jobs(list(SHIFTS))
    br.prepare_archives(jobs)
    out: dict = {}
    for name in methods:
        method = br.METHODS[name]
        thumbs = {a: br.render("full", a, method) for a, *_ in jobs}
        folder = br.trained("full", method, thumbs["train"], 16, False)
        model = OnnxModel(folder / "model.onnx", threads=2)
        model.render = None  # the bench keeps contracts apart by folder
        valid = np.load(folder / "validation.npz")
        vy = valid["labels"][:, 1] > 0.5
        vs = mag_scores(model, list(valid["images"]), list(valid["patches"]))
        thresholds = {k: metrics.threshold_for_recall(vy, s, 0.98) for k, s in vs.items()}
        r = out.setdefault(name, {"thresholds": thresholds, "shifts": {}})
        for archive, shift, *_ in jobs[1:]:
            truth = br.read_truth("full", archive)
            loaded = [
                model.load(thumbs[archive] / thumbnail_name(im.sop_instance_uid, 0)) for im in truth
            ]
            y = np.array([im.has_mag_view for im in truth], bool)
            studies = [im.study_instance_uid for im in truth]
            row = {}
            for k, s in mag_scores(model, [a for a, _ in loaded], [b for _, b in loaded]).items():
                sy, sp = metrics.by_group(y, s, studies)
                at = metrics.at_threshold(sy, sp, thresholds[k])
                row[k] = {"image_auc": metrics.auc(y, s), "study_auc": metrics.auc(sy, sp),
                          "study_recall": at["recall"], "false_alarms": at["confusion"]["fp"],
                          "negatives": int((~sy).sum())}  # fmt: skip
            r["shifts"][shift] = row
            print(f"  {name} {shift:14s} " + " | ".join(
                f"{k}: image AUC {v['image_auc']:.4f} study AUC {v['study_auc']:.4f}"
                for k, v in row.items()), flush=True)  # fmt: skip
    return out


def summary(results: dict) -> list[list]:
    """Per variant and seed: archives below a floor, worst image and study AUC, worst
    recall, false alarms summed over the archives."""
    rows = []
    for variant, about in VARIANTS.items():
        for name, r in results.items():
            cells = [v[variant] for v in r["shifts"].values()]
            below = sum(
                c["study_auc"] < STUDY_AUC or c["image_auc"] < IMAGE_AUC
                or c["study_recall"] < RECALL
                for c in cells
            )  # fmt: skip
            seed = name.rsplit("-seed", 1)[1] if "-seed" in name else "0"
            rows.append([
                f"{variant} ({about})", seed, f"{below} of {len(cells)}",
                f"{min(c['image_auc'] for c in cells):.4f}",
                f"{min(c['study_auc'] for c in cells):.5f}",
                f"{min(c['study_recall'] for c in cells):.0%}",
                f"{sum(c['false_alarms'] for c in cells)} of "
                f"{sum(c['negatives'] for c in cells)}",
            ])  # fmt: skip
    return rows


def write_doc(saved: dict) -> None:
    head = ["mag score", "seed", f"archives below a floor (study AUC {STUDY_AUC}, image AUC "
            f"{IMAGE_AUC}, recall {RECALL:.0%})", "worst image AUC", "worst study AUC",
            "worst study recall", "study false alarms"]  # fmt: skip
    text = (
        f"The shipped recipe's models ({len(saved['results'])} seeds), each scoring the "
        "12 shifted archives of `bench_robustness.py` three ways; each variant's threshold "
        "from the model's validation split scored the same way:\n\n"
        + table(head, summary(saved["results"]))
    )
    write_section("mag_flip.md", "bench_mag_flip", text, when=saved["measured"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=SEEDS)
    ap.add_argument("--doc-only", action="store_true", help="rewrite the page from the results")
    args = ap.parse_args()
    path = RESULTS / "mag_flip.json"
    if args.doc_only:
        write_doc(json.loads(path.read_text()))
        return 0
    os.environ.setdefault("MAMMO_PATIENT_SALT", "bench-salt")  # bench_robustness's split
    saved = {"results": run(args.methods), "measured": measured()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=1, default=float) + "\n")
    write_doc(saved)
    print(table(["variant", "seed", "below", "image AUC", "study AUC", "recall", "FA"],
                summary(saved["results"])))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
