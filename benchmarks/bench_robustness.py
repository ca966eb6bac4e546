"""Robustness: does a model trained on one archive hold on archives it has never seen?

Trains each method once on a base synthetic archive (every image labeled from the
ground truth; the locked hold-out patients left out, so at most ~400 labels), then
scores, side by side in one run, a test archive of other patients (another seed) as the
base generator makes it and as each named shift of `core.synthetic.realism.SHIFTS` makes it (the
same test studies, changed only as the shift says; none of them is used in training).
With ``--lovo``, leave-one-vendor-out too: a model trained without vendor V scores the
test archive's images of V.

Per method, shift and flag: image AUC, study AUC (a study's score is its highest image
score), recall at the model's stored threshold (image and study), false alarms (studies
without the flag that are flagged), study accuracy. A method is a thumbnail rendering
contract and a training recipe (`METHODS`); "today" is the shipped pipeline before this
benchmark existed (rendering v2: headroom to the stored extreme; metal channel at a fixed
level), kept runnable as the baseline.

Archives, thumbnails and models are cached under results/data/robustness/ (an archive
is regenerated only if its ground truth is missing). Results merge by method into
docs/benchmarks/robustness_<matrix>.json (in git: the 13 full-matrix archives take
~30 min to generate on 2 cores, a model ~5 min to train); the table is written to
docs/benchmarks/robustness.md.

    python benchmarks/bench_robustness.py [--methods today ...] [--shifts base metal-low ...]
        [--train-studies 70] [--test-studies 40] [--matrix full|small] [--lovo] [--retrain]
        [--doc-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
RESULTS = HERE / "results"
DATA = RESULTS / "data" / "robustness"
DOC = HERE.parent / "docs" / "benchmarks" / "robustness.md"
#: The raw results, kept in git beside the page (a full rerun takes hours): per matrix.
RAW = DOC.parent / "robustness_{matrix}.json"
TRAIN_SEED, TEST_SEED = 21, 1021


@dataclass(frozen=True)
class Method:
    """A rendering contract (thumbnail_folder keywords) and a training recipe."""

    name: str
    render: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    about: str = ""


def _seeded(base: Method, seed: int, note: str = "") -> Method:
    """`base` with another training seed (run-to-run spread)."""
    return replace(base, name=f"{base.name}-seed{seed}", train=base.train | {"seed": seed},
                   about=f"as `{base.name}`, training seed {seed}{note}")  # fmt: skip


_METHODS = (
    Method(
        "today",
        render={"render": "2"},
        train={"metal": True, "jitter": 0.0, "second_look": False, "size": 160},
        about="before this benchmark: rendering v2 (headroom toward the stored extreme), "
        "metal channel at a fixed level (>= 247), no headroom augmentation",
    ),
    Method(
        "lift",
        render={"render": "3"},
        train={"metal": True, "jitter": 1.0, "second_look": False},
        about="rendering v3 (headroom by local lift above the background, gated off over "
        "air), the image network alone for both flags, headroom jitter",
    ),
    Method(
        "second-look-v3",
        render={"render": "3"},
        train={"metal": True, "jitter": 1.0, "second_look": True, "raise_window": 0.0},
        about="the second look as first shipped: rendering v3 (lift in window widths "
        "only); biopsy from a patch CNN over the 8 highest-lift 8-mm patches "
        "(multiple-instance, highest patch; threshold from 3-fold out-of-fold scores), "
        "mag from the image network (128 px); headroom and patch jitter",
    ),
    Method(
        "second-look-v4",
        render={"render": "4"},
        train={"metal": True, "jitter": 1.0, "second_look": True, "lift_floor": 0.0},
        about="the second look before the lift floor: rendering v4 (over a background "
        "near the stored extreme, an implant, lift against the room left) and the second "
        "look as in `second-look-v3`, its patch jitter raising a quarter of the patches' "
        "window channel toward the window's top",
    ),
    (
        look := Method(
            "second-look",
            render={"render": "4"},
            train={"metal": True, "jitter": 1.0, "second_look": True},
            about="the default until rendering v5: as `second-look-v4`, the patch network "
            "reading each patch's lift against the patch's own highest lift (at least 0.5 "
            "window widths: `network.LIFT_FLOOR`)",
        )
    ),
    (
        mag := Method(
            "second-look-mag",
            render={"render": "5"},
            train={"metal": True, "jitter": 1.0, "second_look": True},
            about="as `second-look`, with rendering v5: a second set of patches 1.8x as wide, "
            "which the second look reads (at about breast size) as far as the image network "
            "calls the view magnified; it trains on the wide set of the images labeled mag",
        )
    ),
    _seeded(mag, 1, " (run-to-run spread)"),
    (
        distinct := Method(
            "second-look-distinct",
            render={"render": "6"},
            train={"metal": True, "jitter": 1.0, "second_look": True},
            about="as `second-look-mag`, with rendering v6: one straight bright object (a "
            "wire, a paddle or collimation edge a lossy codec left speckled) takes at most 2 "
            "spots of a patch set while other objects remain (`lift.OBJECT_SPOTS`)",
        )
    ),
    _seeded(distinct, 1),
    (
        skin := Method(
            "second-look-skin",
            render={"render": "7"},
            train={"metal": True, "jitter": 1.0, "second_look": True},
            about="the default until rendering v8: as `second-look-distinct`, with rendering "
            "v7: no lift within 4 mm of the air (`lift.SKIN_MM`), where metal is a skin "
            "marker, not a biopsy marker",
        )
    ),
    _seeded(skin, 1),
    _seeded(skin, 2),
    (
        objects := replace(
            skin,
            name="second-look-objects",
            render={"render": "8"},
            about="as `second-look-skin` (early stopping included), with rendering v8, the "
            "default since 2026-12-07: nor any lift on a compact round object "
            "(at most 20 mm long, 2.5x as long as wide) that reaches "
            "the skin line (within 2 mm of air: the background's, or cells dark at their "
            "darkest that a path of at most 25 mm joins to it; `lift.skin_objects`, "
            "`Lifter.near_air`): a skin BB whose far side lies deeper than 4 mm, or where the "
            "skin runs into a collimated border past a sliver of air",
        )
    ),
    _seeded(objects, 1),
    _seeded(objects, 2),
    (
        schedule := replace(
            objects,
            name="second-look-schedule",
            train=objects.train | {"patience": 0},
            about="the shipped default: as `second-look-objects`, the image network trains "
            "the whole one-cycle schedule (`TrainConfig.patience` 0, no early stopping): "
            "stopping 5 epochs after the best validation loss had kept a mid-schedule epoch "
            "of high learning rate",
        )
    ),
    _seeded(schedule, 1),
    _seeded(schedule, 2),
    (
        mirror := replace(
            schedule,
            name="second-look-mirror",
            train=schedule.train | {"mag_mirror": True},
            about="as `second-look-schedule`, mag the mean of the image network's logits on "
            "the image and its left-right mirror (`TrainConfig.mag_mirror`; the biopsy blend "
            "keeps the plain logit; `bench_mag_flip.py` measured the mirror on the shipped "
            "models)",
        )
    ),
    _seeded(mirror, 1),
    _seeded(mirror, 2),
    (
        mag_seeds := replace(
            schedule,
            name="second-look-mag-seeds",
            train=schedule.train | {"mag_nets": 2},
            about="as `second-look-schedule`, two image networks (seeds s and s + 1000); mag "
            "and the biopsy blend take the mean of their logits (`TrainConfig.mag_nets`)",
        )
    ),
    _seeded(mag_seeds, 1),
    _seeded(mag_seeds, 2),
    _seeded(distinct, 2),
    _seeded(mag, 2),
    (
        zoom := Method(
            "second-look-zoom",
            render={"render": "4"},
            train={"metal": True, "jitter": 1.0, "second_look": True, "patch_zoom": 1.0},
            about="as `second-look`, half the training patches magnified up to 2x about "
            "their centre (`network.patch_zoom`): objects larger than at contact",
        )
    ),
    _seeded(zoom, 1),
    (
        mag_zoom := Method(
            "second-look-mag-zoom",
            render={"render": "5"},
            train={"metal": True, "jitter": 1.0, "second_look": True, "patch_zoom": 1.0},
            about="as `second-look-mag` (rendering v5), with the zoom of `second-look-zoom`",
        )
    ),
    _seeded(mag_zoom, 1),
    Method(
        "second-look-160",
        render={"render": "4"},
        train={"metal": True, "jitter": 1.0, "second_look": True, "size": 160},
        about="as `second-look`, with a 160-px image network input (the size before)",
    ),
    _seeded(look, 1, " (run-to-run spread)"),
    _seeded(look, 2, " (run-to-run spread)"),
)

METHODS: dict[str, Method] = {m.name: m for m in _METHODS}


def _generate(job: tuple[str, str, int, int, str]) -> str:
    """Write one archive (in a worker process); returns its name."""
    from mammo_dagster.core.synthetic.archive import generate_archive
    from mammo_dagster.core.synthetic.realism import SHIFTS

    name, shift_name, seed, studies, matrix = job
    shift = SHIFTS[shift_name]
    folder = DATA / matrix / name
    generate_archive(
        folder / "dicom",
        studies=studies,
        seed=seed,
        size=matrix,
        vendors=shift.vendors or None,
        transfer_syntaxes=shift.transfer_syntaxes or None,
        realism=shift.realism,
        ground_truth=folder / "truth.csv",
    )
    return name


def archive_jobs(
    shifts: list[str], train_studies: int = 70, test_studies: int = 40, matrix: str = "full"
) -> list[tuple[str, str, int, int, str]]:
    """The training archive, then one test archive per shift: (name, shift, seed, studies,
    matrix) for `prepare_archives`."""
    jobs = [("train", "base", TRAIN_SEED, train_studies, matrix)]
    return jobs + [(f"test-{s}", s, TEST_SEED, test_studies, matrix) for s in shifts]


def prepare_archives(jobs: list[tuple[str, str, int, int, str]]) -> None:
    """Generate the archives whose ground truth is missing, two at a time."""
    todo = [j for j in jobs if not (DATA / j[4] / j[0] / "truth.csv").exists()]
    if not todo:
        return
    print(f"generating {len(todo)} archives ({', '.join(j[0] for j in todo)}) ...", flush=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        for name in pool.map(_generate, todo):
            print(f"  {name} done ({time.perf_counter() - t0:.0f} s)", flush=True)


def render(matrix: str, archive: str, method: Method) -> Path:
    """Thumbnails of an archive under the method's rendering contract (cached)."""
    from mammo_dagster.core.imaging.batch import thumbnail_folder

    key = "-".join(f"{k}{v}" for k, v in sorted(method.render.items())) or "default"
    out = DATA / matrix / "thumbnails" / key
    thumbnail_folder(DATA / matrix / archive / "dicom", out, size=512, workers=2, **method.render)
    return out


def read_truth(matrix: str, archive: str) -> list:
    from mammo_dagster.core.synthetic.truth import read_ground_truth

    return read_ground_truth(DATA / matrix / archive / "truth.csv")


def snapshot(truth: list, thumbs: Path, exclude_vendor: str | None = None):
    """A training snapshot from ground truth: split by patient as the pipeline splits."""
    from mammo_dagster.core.imaging.batch import thumbnail_name
    from mammo_dagster.core.model.dataset import Example, Snapshot
    from mammo_dagster.core.model.splits import split_of

    examples = []
    for im in truth:
        if im.vendor == exclude_vendor:
            continue
        key = f"bench:{im.patient_id}"
        examples.append(
            Example(
                im.sop_instance_uid,
                0,
                str(thumbs / thumbnail_name(im.sop_instance_uid, 0)),
                im.has_biopsy_tool,
                im.has_mag_view,
                split_of(key),
                key,
                im.study_instance_uid,
                im.vendor,
            )  # fmt: skip
        )
    return Snapshot(examples, len(examples), len(examples), 0)


def trained(matrix: str, method: Method, thumbs: Path, epochs: int, retrain: bool,
            exclude_vendor: str | None = None) -> Path:  # fmt: skip
    """The method's model (trained now unless cached): the folder with model.onnx."""
    from mammo_dagster.core.model.train import TrainConfig, train

    name = method.name + (f"-no-{exclude_vendor}" if exclude_vendor else "")
    out = DATA / matrix / "models" / name
    if (out / "card.json").exists() and not retrain:
        return out
    snap = snapshot(read_truth(matrix, "train"), thumbs, exclude_vendor)
    c = snap.counts()
    print(f"  training {name}: {c['train']['images']} train + {c['valid']['images']} "
          f"valid labels ({c['holdout']['images']} hold-out images left out) ...",
          flush=True)  # fmt: skip
    t0 = time.perf_counter()
    # every method before `second-look-schedule` trained with early stopping (patience 5),
    # the default then, and every method before `second-look-mirror` without the mirror
    then = {"patience": 5, "mag_mirror": False}
    config = TrainConfig(epochs=epochs, any_render=True, **(then | method.train))
    card = train(snap, out, config)
    card["bench_minutes"] = round((time.perf_counter() - t0) / 60, 2)
    (out / "card.json").write_text(json.dumps(card, indent=2, default=str))
    return out


def flag_scores(
    truth: list, probs: np.ndarray, threshold: dict, flag: str, k: int,
    others: dict[str, dict] | None = None,
) -> dict:  # fmt: skip
    """Image and study metrics of one flag at the model's stored threshold, and recall and
    false alarms at `others`, named other thresholds of the same model (`ALTERNATIVES`)."""
    from mammo_dagster.core import metrics

    attr = "has_biopsy_tool" if flag == "biopsy" else "has_mag_view"
    y = np.array([getattr(im, attr) for im in truth], bool)
    p = probs[:, k]
    sy, sp = metrics.by_group(y, p, [im.study_instance_uid for im in truth])
    t = threshold[flag]
    img, std = metrics.at_threshold(y, p, t), metrics.at_threshold(sy, sp, t)
    out = {
        "images": int(len(y)), "image_positives": int(y.sum()),
        "studies": int(len(sy)), "study_positives": int(sy.sum()),
        "image_auc": metrics.auc(y, p), "study_auc": metrics.auc(sy, sp),
        "image_recall": img["recall"], "study_recall": std["recall"],
        "study_false_alarms": std["confusion"]["fp"], "study_negatives": int((~sy).sum()),
        "image_false_alarms": img["confusion"]["fp"], "study_accuracy": std["accuracy"],
        "threshold": t,
    }  # fmt: skip
    for name, ts in (others or {}).items():
        if ts and flag in ts:
            out |= _at_other(name, y, p, sy, sp, ts[flag])
    return out


#: The card's other thresholds the benchmark scores beside the stored one: what
#: validation alone would have chosen, and the same rule counting images, not studies.
ALTERNATIVES = {"validation": "validation_thresholds", "image_rule": "image_rule_thresholds"}


def _at_other(name: str, y, p, sy, sp, t: float) -> dict:
    from mammo_dagster.core import metrics

    img, std = metrics.at_threshold(y, p, t), metrics.at_threshold(sy, sp, t)
    return {f"{name}_threshold": t, f"image_recall_at_{name}_threshold": img["recall"],
            f"study_recall_at_{name}_threshold": std["recall"],
            f"study_false_alarms_at_{name}_threshold": std["confusion"]["fp"]}  # fmt: skip


def score(model_dir: Path, truth: list, thumbs: Path) -> dict:
    """Both flags of one model on one archive (fp32 ONNX, the model's stored thresholds)."""
    from mammo_dagster.core.imaging.batch import thumbnail_name
    from mammo_dagster.core.prediction.onnx_model import OnnxModel

    model = OnnxModel(model_dir / "model.onnx", threads=2)
    model.render = None  # the bench keeps contracts apart by folder
    pngs = [thumbs / thumbnail_name(im.sop_instance_uid, 0) for im in truth]
    probs = model.thumbnail_probs(pngs)
    others = {name: model.card.get(key) for name, key in ALTERNATIVES.items()}
    return {f: flag_scores(truth, probs, model.thresholds, f, k, others)
            for k, f in enumerate(("biopsy", "mag"))}  # fmt: skip


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:.0%}" if pct else f"{v:.3f}"


def table(results: dict, methods: list[str], shifts: list[str]) -> str:
    """The markdown table: one row per method and archive."""
    from mammo_dagster.core.synthetic.realism import SHIFTS

    cols = "image AUC / study AUC / study recall / false alarms"
    head = f"| method | archive | biopsy: {cols} | mag: {cols} |\n|---|---|---|---|\n"
    rows = []
    for m in methods:
        r = results.get(m) or {}
        archives = [(s, SHIFTS[s].about) for s in shifts if s in r.get("shifts", {})]
        archives += [(k, "leave-one-vendor-out") for k in sorted(r.get("lovo", {}))]
        for name, about in archives:
            scores = r["shifts"].get(name) or r["lovo"].get(name)
            cells = []
            for flag in ("biopsy", "mag"):
                s = scores[flag]
                cells.append(
                    f"{_fmt(s['image_auc'])} / {_fmt(s['study_auc'])} / "
                    f"{_fmt(s['study_recall'], True)} / {s['study_false_alarms']} of "
                    f"{s['study_negatives']}"
                )
            rows.append(f"| `{m}` | {name} ({about}) | {cells[0]} | {cells[1]} |")
    return head + "\n".join(rows) + "\n"


def threshold_table(results: dict, methods: list[str]) -> str:
    """Per method and flag, over every shifted archive: image and study recall and study
    false alarms at the stored threshold and at each other one the card names
    (`ALTERNATIVES`: validation's, and the rule counting images) where it holds them."""
    head = (
        "| method | flag | threshold | value | image recall, mean (worst) | study recall, "
        "mean (worst) | study false alarms, all archives |\n|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for m in methods:
        shifts = (results.get(m) or {}).get("shifts", {})
        for flag in ("biopsy", "mag"):
            s = [v[flag] for v in shifts.values()]
            if not s or not any("validation_threshold" in v for v in s):
                continue
            neg = sum(v["study_negatives"] for v in s)
            names = [("stored", "")] + [(n, f"_at_{n}_threshold") for n in ALTERNATIVES]
            for name, suffix in names:
                if suffix and f"{name}_threshold" not in s[0]:
                    continue
                img = [v[f"image_recall{suffix}"] for v in s
                       if v.get(f"image_recall{suffix}") is not None]  # fmt: skip
                std = [v[f"study_recall{suffix}"] for v in s
                       if v.get(f"study_recall{suffix}") is not None]  # fmt: skip
                if not img or not std:
                    continue
                fa = sum(v[f"study_false_alarms{suffix}"] for v in s)
                t = s[0]["threshold" if not suffix else f"{name}_threshold"]
                rows.append(
                    f"| `{m}` | {flag} | {name.replace('_', ' ')} | {t:.3f} | "
                    f"{np.mean(img):.1%} ({min(img):.0%}) | {np.mean(std):.1%} "
                    f"({min(std):.0%}) | {fa} of {neg} |"
                )
    return head + "\n".join(rows) + "\n" if rows else ""


def write_doc(results: dict, methods: list[str], shifts: list[str], setup: str) -> None:
    DOC.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Robustness benchmark (`benchmarks/bench_robustness.py`)", "",
             "Generated by the benchmark; do not edit by hand. The methods of earlier runs "
             "(rendering v2-v7, tried recipes) and their numbers: "
             "[history/robustness-2026-12-06.md](history/robustness-2026-12-06.md).", "",
             setup, "",
             table(results, methods, shifts), ""]  # fmt: skip
    thresholds = threshold_table(results, methods)
    if thresholds:
        lines += ["Thresholds that hold: the stored biopsy threshold comes from out-of-fold "
                  "scores over train + validation (3 folds), the mag threshold from "
                  "validation; the biopsy threshold of models that store image_rule_thresholds "
                  "counts studies (a study's score is its best image's), never above "
                  "validation's. Beside it, over every archive "
                  "above: the threshold validation alone would have chosen, and the same "
                  "rule counting images (models that store them):", "", thresholds,
                  ""]  # fmt: skip
    lines += ["Methods:", ""]
    for m in methods:
        r = results.get(m) or {}
        lines.append(f"- `{m}`: {METHODS[m].about} (trained in {r.get('train_minutes')} min on "
                     f"{r.get('train_labels')} labels)")  # fmt: skip
    DOC.write_text("\n".join(lines) + "\n")


def main() -> int:
    from mammo_dagster.core.imaging.vendors import DEFAULT_VENDORS
    from mammo_dagster.core.synthetic.realism import SHIFTS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--shifts", nargs="+", default=list(SHIFTS), choices=list(SHIFTS))
    ap.add_argument("--train-studies", type=int, default=70)
    ap.add_argument("--test-studies", type=int, default=40)
    ap.add_argument("--matrix", choices=["full", "small"], default="full")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--lovo", action="store_true", help="leave-one-vendor-out too")
    ap.add_argument("--retrain", action="store_true", help="ignore cached models")
    ap.add_argument("--doc-only", action="store_true", help="rewrite the doc from the results")
    args = ap.parse_args()
    os.environ.setdefault("MAMMO_PATIENT_SALT", "bench-salt")
    setup = (f"{args.matrix} matrices; trained on {args.train_studies} studies (seed "
             f"{TRAIN_SEED}), tested on {args.test_studies} other studies (seed {TEST_SEED}) "
             f"per archive; {args.epochs} epochs; study score = highest image score; recall "
             "and false alarms at the model's stored threshold.")  # fmt: skip
    out = Path(str(RAW).format(matrix=args.matrix))
    if args.doc_only:
        results = json.loads(out.read_text())
        write_doc(results, list(results), list(SHIFTS), setup)
        print(threshold_table(results, list(results)))
        return 0

    jobs = archive_jobs(args.shifts, args.train_studies, args.test_studies, args.matrix)
    prepare_archives(jobs)
    try:
        results = json.loads(out.read_text())
    except (OSError, ValueError):
        results = {}
    for name in args.methods:
        method = METHODS[name]
        print(f"{name}: {method.about}", flush=True)
        thumbs = {}
        for archive, *_ in jobs:
            thumbs[archive] = render(args.matrix, archive, method)
        model = trained(args.matrix, method, thumbs["train"], args.epochs, args.retrain)
        card = json.loads((model / "card.json").read_text())
        r = results.setdefault(name, {})
        r.update(train_minutes=card.get("bench_minutes"),
                 train_labels=card["train_images"] + card["valid_images"])  # fmt: skip
        r.setdefault("shifts", {})
        for archive, shift, *_ in jobs[1:]:
            r["shifts"][shift] = score(model, read_truth(args.matrix, archive), thumbs[archive])
            b, m = r["shifts"][shift]["biopsy"], r["shifts"][shift]["mag"]
            print(f"  {shift:14s} biopsy study AUC {_fmt(b['study_auc'])} recall "
                  f"{_fmt(b['study_recall'], True)} false alarms {b['study_false_alarms']}/"
                  f"{b['study_negatives']} | mag study AUC {_fmt(m['study_auc'])} recall "
                  f"{_fmt(m['study_recall'], True)}", flush=True)  # fmt: skip
        if args.lovo:
            r.setdefault("lovo", {})
            base = read_truth(args.matrix, "test-base")
            for vendor in DEFAULT_VENDORS:
                held = trained(args.matrix, method, thumbs["train"], args.epochs, args.retrain,
                               exclude_vendor=vendor)  # fmt: skip
                only = [im for im in base if im.vendor == vendor]
                r["lovo"][f"without-{vendor}"] = score(held, only, thumbs["test-base"])
        out.write_text(json.dumps(results, indent=2) + "\n")
    write_doc(results, list(results), list(SHIFTS), setup)
    print(table(results, args.methods, args.shifts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
