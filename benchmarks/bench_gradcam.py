"""Where the overlays look: the share of a biopsy overlay's mass inside the marker's
neighbourhood, on synthetic images whose ground truth says where each marker lies.

Trains on a synthetic archive (every image labeled from the ground truth) and scores a
test archive of other patients (another seed), side by side in one run:
- `shipped`: the pipeline's model (the current rendering contract, the second look); its biopsy
  overlay is the patch network's score at each patch's spot (`core.model.gradcam.spot_map`);
- `image-net`: the image network alone (the network before the second look); its
  biopsy overlay is Grad-CAM of the ResNet body's last block.
`--model DIR` scores a trained model folder (`models/<version>`) instead of training.

For each test image with a biopsy marker, the heatmap review mode draws (`core.model.gradcam.
heatmap`: padding masked) and, for comparison, the same heatmap with the padding kept,
and a uniform map over the image (the share a map that knows nothing gets: the
neighbourhood's share of the image's area). The neighbourhood is each marker's bounding
box (ground truth `marker_boxes`, mapped onto the thumbnail) grown by `--margin-mm`.
Reported per map: mean and median share of the mass inside, how often the hottest pixel
lies inside, the mass on the padding, and the lift over the uniform map.

Results go to results/gradcam.json and the table to docs/benchmarks/gradcam.md.

    python benchmarks/bench_gradcam.py [--train-studies 60] [--test-studies 24]
        [--epochs 16] [--size 128] [--margin-mm 5] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
RESULTS = HERE / "results"
DATA = RESULTS / "data" / "gradcam"
DOC = HERE.parent / "docs" / "benchmarks" / "gradcam.md"
TRAIN_SEED, TEST_SEED = 31, 1031
LAYER3 = 6  #: ResNet18's layer3 in fastai's encoder (stem, bn, relu, pool, layer1..4)
MODELS = {"shipped": {"second_look": True}, "image-net": {"second_look": False}}


def prepare(home: Path, drop: str, studies: int, seed: int, *, label: bool) -> list:
    """A small-matrix synthetic archive in drop `drop` of the data folder `home`,
    indexed, its 512-px thumbnails rendered, labeled from the ground truth if `label`.
    Returns its ground truth."""
    from mammo_dagster.core.home import Home
    from mammo_dagster.core.imaging.batch import thumbnail_folder
    from mammo_dagster.core.imaging.index import ingest_drop
    from mammo_dagster.core.store.db import DB_NAME, Store
    from mammo_dagster.core.store.labels import append_events, load_events
    from mammo_dagster.core.synthetic.archive import generate_archive
    from mammo_dagster.core.synthetic.truth import read_ground_truth, truth_labels

    truth = home / "synthetic" / f"{drop}_ground_truth.csv"
    folder = home / "incoming" / drop
    if not truth.exists():  # written last: a partial archive is regenerated
        print(f"  generating {studies} studies ({drop}) ...", file=sys.stderr, flush=True)
        generate_archive(folder, studies=studies, seed=seed, size="small", ground_truth=truth)
    images = read_ground_truth(truth)
    store = Store(home / DB_NAME)
    store.migrate()
    ingest_drop(Home(home), folder.name, workers=2)
    thumbnail_folder(folder, home / "thumbnails", size=512, workers=2)
    if label:
        labeled = {e.sop_instance_uid for e in load_events(store)}
        append_events(store, truth_labels([i for i in images if i.sop_instance_uid not in labeled]))
    return images


def train_model(home: Path, name: str, size: int, epochs: int) -> Path:
    """Train (once; cached by name, size and epochs) and return the model folder."""
    from mammo_dagster.core.model.dataset import build_snapshot
    from mammo_dagster.core.model.train import TrainConfig, train
    from mammo_dagster.core.store.db import DB_NAME, Store

    out = home / "models" / f"{name}_{size}_{epochs}"
    if (out / "model.pt").exists() and (out / "card.json").exists():
        return out
    snapshot = build_snapshot(Store(home / DB_NAME), home / "thumbnails")
    t0 = time.perf_counter()
    config = TrainConfig(size=size, epochs=epochs, **MODELS[name])
    card = train(snapshot, out, config)
    auc = holdout_auc(card)
    print(f"  trained {name} in {time.perf_counter() - t0:.0f} s (hold-out biopsy AUC "
          f"{auc if auc is None else round(auc, 3)})", file=sys.stderr, flush=True)  # fmt: skip
    return out


def holdout_auc(card: dict) -> float | None:
    """The biopsy flag's hold-out AUC (None when the hold-out had no marker)."""
    return ((card.get("holdout") or {}).get("biopsy") or {}).get("auc")


@dataclass
class Scored:
    """One heatmap of one image against its marker neighbourhood."""

    kind: str
    share: float  # of the heat mass inside the neighbourhood
    peak_inside: bool
    padding_share: float  # of the heat mass on the padding
    area_share: float  # the neighbourhood's share of the image (a uniform map's share)


def neighbourhood(image, thumb_shape: tuple[int, int], margin_mm: float) -> np.ndarray:
    """The markers' boxes (ground truth, stored-matrix pixels) grown by `margin_mm`, on
    the padded square thumbnail the way `core.imaging.thumbnails` fits the matrix into it."""
    import pydicom

    from mammo_dagster.core.imaging.thumbnails import fit_size

    ds = pydicom.dcmread(image.path, stop_before_pixels=True)
    rows, cols = int(ds.Rows), int(ds.Columns)
    spacing = float((ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing"))[0])
    size = thumb_shape[0]
    h, w = fit_size(rows, cols, size)
    top, left = (size - h) // 2, (size - w) // 2
    sy, sx = h / rows, w / cols
    grow = margin_mm / spacing  # stored-matrix pixels
    mask = np.zeros(thumb_shape, bool)
    for box in image.marker_boxes.split(";"):
        r0, c0, r1, c1 = map(int, box.split())
        y0 = max(0, int(np.floor(top + (r0 - grow) * sy)))
        x0 = max(0, int(np.floor(left + (c0 - grow) * sx)))
        y1 = min(size, int(np.ceil(top + (r1 + grow) * sy)))
        x1 = min(size, int(np.ceil(left + (c1 + grow) * sx)))
        mask[y0:y1, x0:x1] = True
    return mask


def content(gray: np.ndarray) -> np.ndarray:
    """The image inside the black padding that squares a thumbnail (as `mask_padding`)."""
    rows, cols = np.flatnonzero(gray.any(axis=1)), np.flatnonzero(gray.any(axis=0))
    keep = np.zeros(gray.shape, bool)
    if len(rows):
        keep[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    return keep


def score(cam: np.ndarray, near: np.ndarray, inside: np.ndarray, kind: str) -> Scored:
    total = float(cam.sum())
    area = float((near & inside).sum() / max(1, inside.sum()))
    if total <= 0:  # an empty map shows nothing anywhere
        return Scored(kind, 0.0, False, 0.0, area)
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return Scored(
        kind,
        float(cam[near].sum() / total),
        bool(near[peak]),
        float(cam[~inside].sum() / total),
        area,
    )


def evaluate(folder: Path, home: Path, images: list, margin_mm: float) -> dict[str, list]:
    """Every map's scores over the test images with a marker."""
    from mammo_dagster.core.imaging.batch import thumbnail_name
    from mammo_dagster.core.model.gradcam import heatmap, load_torch_model
    from mammo_dagster.core.model.modelstore import ModelCard

    shipped = load_torch_model(folder)
    size = ModelCard.read(folder).input_size
    maps: dict[str, list[Scored]] = {"masked": [], "unmasked": [], "layer3": [], "uniform": []}
    for image in images:
        if not image.marker_boxes:
            continue
        thumb = home / "thumbnails" / thumbnail_name(image.sop_instance_uid, 0)
        kind = image.marker_kind.split("+")[0]
        kind = "clip" if kind not in ("wire", "needle") else kind
        gray, masked = heatmap(shipped, size, thumb, "biopsy")
        _, unmasked = heatmap(shipped, size, thumb, "biopsy", masked=False)
        near, inside = neighbourhood(image, gray.shape, margin_mm), content(gray)
        maps["masked"].append(score(masked, near, inside, kind))
        maps["unmasked"].append(score(unmasked, near, inside, kind))
        if not shipped.second_look:  # Grad-CAM one block earlier: an 8 x 8 grid at 128 px
            _, finer = heatmap(shipped, size, thumb, "biopsy", block=LAYER3)
            maps["layer3"].append(score(finer, near, inside, kind))
        maps["uniform"].append(score(inside.astype(np.float32), near, inside, kind))
    return maps


def summary(scored: list[Scored]) -> dict:
    if not scored:
        return {"images": 0}
    shares = np.array([s.share for s in scored])
    return {
        "images": len(scored),
        "mean_share": round(float(shares.mean()), 3),
        "median_share": round(float(np.median(shares)), 3),
        "peak_inside": round(float(np.mean([s.peak_inside for s in scored])), 3),
        "padding_share": round(float(np.mean([s.padding_share for s in scored])), 3),
        "area_share": round(float(np.mean([s.area_share for s in scored])), 3),
    }


ABOUT = {
    "masked": "the overlay review mode shows (padding masked)",
    "unmasked": "the same heatmap, padding kept",
    "layer3": "Grad-CAM on layer3 (8 x 8 at 128 px), padding masked",
    "uniform": "a uniform map over the image (baseline)",
}


def table(results: dict) -> str:
    head = ("| model | biopsy overlay | map | images | mass inside, mean | median | hottest "
            "pixel inside | mass on padding | lift over uniform |")  # fmt: skip
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for model, r in results["models"].items():
        for name, m in r["maps"].items():
            for kind, s in m.items():
                if not s["images"] or (kind != "all" and name not in ("masked", "layer3")):
                    continue  # per kind only for the overlay itself
                uniform = r["maps"]["uniform"][kind]["mean_share"]  # the same images'
                lift = s["mean_share"] / uniform if uniform else float("nan")
                what = ABOUT[name] + ("" if kind == "all" else f": {kind} images")
                lines.append(
                    f"| {model} | {r['overlay']} | {what} | {s['images']} | "
                    f"{s['mean_share']:.1%} | {s['median_share']:.1%} | {s['peak_inside']:.0%} "
                    f"| {s['padding_share']:.1%} | {lift:.1f}x |"
                )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-studies", type=int, default=60)
    ap.add_argument("--test-studies", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--size", type=int, default=128, help="model input (default 128)")
    ap.add_argument("--margin-mm", type=float, default=5.0, help="neighbourhood margin")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--model", type=Path, help="score this model folder instead of training")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite the docs table")
    args = ap.parse_args()
    os.environ.setdefault("MAMMO_PATIENT_SALT", "bench-salt")
    import torch

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    # one data folder per training archive (training uses every label in it)
    home = DATA / f"train{args.train_studies}"
    if args.model is None:
        prepare(home, "train", args.train_studies, TRAIN_SEED, label=True)
        folders = {m: train_model(home, m, args.size, args.epochs) for m in args.models}
    else:
        folders = {args.model.name: args.model.resolve()}
    test = prepare(home, f"test{args.test_studies}", args.test_studies, TEST_SEED, label=False)
    results: dict = {"margin_mm": args.margin_mm, "test_studies": args.test_studies,
                     "train_studies": args.train_studies, "models": {}}  # fmt: skip
    for name, folder in folders.items():
        card = json.loads((folder / "card.json").read_text())
        overlay = "patch scores at their spots" if card.get("second_look") else "Grad-CAM"
        maps = evaluate(folder, home, test, args.margin_mm)
        results["models"][name] = {
            "folder": str(folder),
            "overlay": overlay,
            "holdout_biopsy_auc": holdout_auc(card),
            "maps": {
                m: {"all": summary(s)}
                | {k: summary([x for x in s if x.kind == k]) for k in sorted({x.kind for x in s})}
                for m, s in maps.items()
            },
        }
    results["seconds"] = round(time.perf_counter() - t0, 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gradcam.json").write_text(json.dumps(results, indent=2))
    text = table(results)
    print(text)
    if not args.no_doc:
        head, rest = DOC.read_text().split("<!-- table -->")
        tail = rest.split("<!-- /table -->")[1]
        DOC.write_text(f"{head}<!-- table -->\n{text}\n<!-- /table -->{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
