"""`mammo predict` end to end vs a naive baseline, on full-size synthetic DICOMs.

For explicit VR little endian and JPEG 2000 drops of N and 4N images (mixed
vendors), in one run, each variant in a fresh process:
- ours: `predict_folder` with a model of the current contract (2 decode workers, the
  fast reduced-resolution path, the current rendering with its patches, ONNX Runtime
  int8 with the second look, streaming CSVs);
- previous: the same with a model of an earlier rendering contract (`--previous`;
  default: the one before the current contract; the current one: its graph without the
  mag mirror, `TrainConfig.mag_mirror`);
- v2: the same with a model of rendering contract v2 (the image-only graph): what
  `mammo predict` cost before the second look;
- naive: sequential pydicom full decode -> float VOI -> PIL resize -> ORT fp32,
  batch 32 (what a first script would do).
Reports images/s and each process's own peak RSS (plus its workers'), which must
not grow from N to 4N. The model is an untrained ResNet18 of the default input
size: speed does not depend on the weights.

    python benchmarks/bench_predict.py [--images 64] [--repeats 3] [--naive-repeats 1]
        [--previous N] [--doc-only]  # rewrite the page from the results

Results go to results/predict.json; the table to docs/benchmarks/model.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_ingest import _vm_hwm_mb  # the same folder
from pages import RESULTS, bold, measured, table, write_section

DATA = RESULTS / "data"
TARGET = {"explicit": 40}  # img/s for `mammo predict` on uncompressed files, the target
SYNTAX_NAMES = {"explicit": "explicit VR", "j2k": "JPEG 2000"}


def generate(syntax: str, n: int) -> None:
    from mammo_dagster.core.synthetic.archive import generate_archive

    folder = DATA / f"predict_{syntax}_{n}"
    shutil.rmtree(folder, ignore_errors=True)
    images = generate_archive(
        folder / "drop", studies=max(1, n // 4), seed=5, size="full",
        transfer_syntaxes=[syntax], ground_truth=folder / "truth.csv",
    )  # fmt: skip
    for extra in images[n:]:
        extra.path.unlink()
    (folder / "done").write_text("")


def _drop(syntax: str, n: int) -> Path:
    folder = DATA / f"predict_{syntax}_{n}"
    if not (folder / "done").exists():
        print(f"  generating {n} full-size {syntax} images ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, __file__, "--generate", syntax, str(n)], check=True)
    return folder / "drop"


def model(size: int, render: str | None = None, mirror: bool = False) -> Path:
    """An untrained model of the architecture of rendering contract `render` (default:
    the current one; v3 and later: with the second look; `mirror`: mag on the image and
    its left-right mirror), exported once (fp32 + int8)."""
    from mammo_dagster.core.imaging.thumbnails import LIFT_RENDERS, RENDER_VERSION

    render = render or RENDER_VERSION
    folder = DATA / f"predict_model_{size}_v{render}{'_mirror' if mirror else ''}"
    if (folder / "model.int8.onnx").exists():
        return folder
    import numpy as np
    import torch

    from mammo_dagster.core.imaging.lift import PATCH_CHANNELS, PATCH_PX, PATCHES
    from mammo_dagster.core.imaging.preprocess import patch_sets
    from mammo_dagster.core.model.export import export_onnx, quantize_int8
    from mammo_dagster.core.model.network import METAL_LEVELS, ExportModel, network

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    second = render in LIFT_RENDERS
    sets = patch_sets(render)
    net = ExportModel.wrap(network(levels=METAL_LEVELS[render], second_look=second, sets=sets,
                                   mirror=mirror))  # fmt: skip
    export_onnx(net, folder / "model.onnx", size)
    rng = np.random.default_rng(0)
    shape = (32, PATCHES * sets, len(PATCH_CHANNELS), PATCH_PX, PATCH_PX)
    quantize_int8(
        folder / "model.onnx",
        folder / "model.int8.onnx",
        rng.integers(0, 255, (32, size, size), dtype=np.uint8),
        rng.integers(0, 255, shape, dtype=np.uint8) if second else None,
    )
    from mammo_dagster.core.imaging.preprocess import CONTRACT

    pre = CONTRACT | {"render": render}
    card = {"input_size": size, "version": f"bench-v{render}", "preprocessing": pre}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def naive(drop: Path, model_dir: Path, out: Path) -> int:
    import warnings

    import numpy as np
    import onnxruntime as ort
    import pydicom
    from PIL import Image
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

    warnings.filterwarnings("ignore")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(model_dir / "model.onnx"), options)
    size = json.loads((model_dir / "card.json").read_text())["input_size"]
    batch, rows = [], []

    def flush() -> None:
        if batch:
            x = np.stack(batch).astype(np.float32)[:, None] / 255
            rows.extend(session.run(None, {"image": x})[0].tolist())
            batch.clear()

    for path in sorted(p for p in drop.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
            arr = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
        except Exception:
            continue
        arr = (arr - arr.min()) / max(arr.max() - arr.min(), 1e-9)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            arr = 1.0 - arr
        img = Image.fromarray((arr * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        batch.append(np.asarray(img))
        if len(batch) == 32:
            flush()
    flush()
    out.write_text("\n".join(",".join(f"{v:.5f}" for v in r) for r in rows))
    return len(rows)


def child(variant: str, drop: Path, model_dir: Path) -> None:
    from mammo_dagster.core.prediction.predict import predict_folder

    work = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    marks: list[float] = []  # when each file was done (ours)
    t0 = time.perf_counter()
    if variant in ("ours", "previous", "v2"):
        images = predict_folder(
            drop, work / "out.csv", model_dir / "model.int8.onnx",
            progress=lambda n: marks.extend([time.perf_counter()] * n),
        ).images  # fmt: skip
    else:
        images = naive(drop, model_dir, work / "out.csv")
    elapsed = time.perf_counter() - t0
    shutil.rmtree(work)
    q = len(marks) // 4  # the middle half of the files: the rate once the workers run
    steady = (2 * q) / (marks[3 * q] - marks[q]) if q and marks[3 * q] > marks[q] else None
    print(json.dumps({
        "elapsed": elapsed,
        "images": images,
        "first_file_s": marks[0] - t0 if marks else None,
        "steady_img_s": steady,
        "self_mb": _vm_hwm_mb(),
        "workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))  # fmt: skip


def measure(variant: str, drop: Path, model_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, str(drop), str(model_dir)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_doc(
    rows: list[dict],
    repeats: int,
    naive_repeats: int,
    when: str | None = None,
    previous: str = "5",
    ours: str = "7",
) -> None:
    """The page's section; `previous` and `ours`: the rendering contracts compared."""

    def prev(r: dict) -> float | None:  # runs before --previous existed compared with v5
        return r.get("previous_img_s", r.get("v5_img_s"))

    body = [
        (
            SYNTAX_NAMES.get(r["syntax"], r["syntax"]),
            r["images"],
            f"{r['naive_img_s']:.1f}",
            f"{r['v2_img_s']:.1f}",
            f"{prev(r):.1f}" if prev(r) else "–",
            bold(f"{r['ours_img_s']:.1f}"),
            f"{r['ours_img_s'] / r['v2_img_s']:.2f}×",
            f"{r['ours_img_s'] / prev(r):.2f}×" if prev(r) else "–",
            f"{r['ours_first_file_s']:.2f} s",
            f"{r['ours_steady_img_s']:.1f} img/s",
            f"{r['naive_self_mb']:.0f} MB",
            f"{r['ours_self_mb']:.0f} MB (+{r['ours_workers_mb']:.0f} MB)",
        )
        for r in rows
    ]
    text = (
        f"Median of {repeats} runs for v2, v{previous} and ours, {naive_repeats} for the naive "
        f"baseline (v2: the image-only graph; v{previous}: the model and rendering of contract "
        f"v{previous}; ours: rendering v{ours}, the default when measured; {RENDER_NOTES}):"
        "\n\n"
        + table(
            [
                "syntax",
                "images",
                "naive img/s",
                "v2 img/s",
                f"v{previous} img/s",
                f"**v{ours}** img/s",
                f"v{ours} vs v2",
                f"v{ours} vs v{previous}",
                "first file",
                "steady",
                "peak RSS naive",
                f"v{ours} (+ each worker)",
            ],
            body,
        )  # fmt: skip
    )
    for syntax, target in TARGET.items():
        got = [r for r in rows if r["syntax"] == syntax]
        if got:
            rate = got[-1]["ours_img_s"]
            text += (
                f"\n\n{SYNTAX_NAMES[syntax]}, {got[-1]['images']} files: "
                f"**{rate:.1f} img/s** against the ≥ {target} img/s target: "
                + ("met." if rate >= target else "**not met**.")
            )
    for syntax in sorted({r["syntax"] for r in rows}):
        got = [r for r in rows if r["syntax"] == syntax]
        grow = round(got[-1]["ours_self_mb"] - got[0]["ours_self_mb"])
        text += (
            f"\n\n{SYNTAX_NAMES.get(syntax, syntax)}: peak memory {grow:+d} MB from "
            f"{got[0]['images']} to {got[-1]['images']} images."
        )
    write_section("model.md", "bench_predict", text, when=when)


#: What each rendering contract adds to predict's work (for the page).
RENDER_NOTES = (
    "v5: two sets of 8 patches, plain spots; v6: distinct spots; v7: no lift on the skin "
    "line; v8: nor on a compact round object that reaches it"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64, help="N (the larger drop is 4N)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--naive-repeats", type=int, default=1, choices=range(1, 10), metavar="1..9",
        help="runs of the baseline (at ~1 img/s for JPEG 2000, one is minutes)",
    )  # fmt: skip
    ap.add_argument("--size", type=int, default=None, help="model input (default: ours)")
    ap.add_argument("--syntaxes", nargs="+", default=["explicit", "j2k"])
    ap.add_argument(
        "--previous",
        default=None,
        help="the rendering contract to compare with (default: the one before ours)",
    )
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--generate", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--doc-only", action="store_true", help="rewrite the page from the results")
    args = ap.parse_args()
    if args.doc_only:
        saved = json.loads((RESULTS / "predict.json").read_text())
        write_doc(saved["rows"], saved["repeats"], saved["naive_repeats"], saved.get("measured"),
                  saved.get("previous", "5"), saved.get("ours", "7"))  # fmt: skip
        return 0
    if args.generate:
        generate(args.generate[0], int(args.generate[1]))
        return 0
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    from mammo_dagster.core.imaging.preprocess import INPUT_SIZE
    from mammo_dagster.core.imaging.thumbnails import RENDER_VERSION, RENDERS

    args.previous = args.previous or RENDERS[RENDERS.index(RENDER_VERSION) - 1]

    from mammo_dagster.core.model.config import TrainConfig

    mirror = TrainConfig().mag_mirror
    unmirrored = mirror and args.previous == RENDER_VERSION  # ours without the mirror
    models = {
        "ours": model(args.size or INPUT_SIZE, mirror=mirror),
        "previous": model(args.size or INPUT_SIZE, args.previous),
        "v2": model(args.size or INPUT_SIZE, "2"),
    }
    models["naive"] = models["v2"]
    rows = []
    for syntax in args.syntaxes:
        for n in (args.images, 4 * args.images):
            drop = _drop(syntax, n)
            runs: dict[str, list[dict]] = {"naive": [], "v2": [], "previous": [], "ours": []}
            for i in range(args.repeats):
                for variant in runs:
                    if variant != "naive" or i < args.naive_repeats:
                        runs[variant].append(measure(variant, drop, models[variant]))
            row = {"syntax": syntax, "images": n}
            for variant, results in runs.items():
                row[f"{variant}_img_s"] = n / statistics.median(r["elapsed"] for r in results)
                if variant != "naive":
                    for key in ("first_file_s", "steady_img_s"):
                        got = [r[key] for r in results if r[key] is not None]
                        row[f"{variant}_{key}"] = statistics.median(got) if got else float("nan")
                row[f"{variant}_self_mb"] = max(r["self_mb"] for r in results)
                row[f"{variant}_workers_mb"] = max(r["workers_mb"] for r in results)
            rows.append(row)
            print(
                f"{syntax:9s} {n:4d} images: naive {row['naive_img_s']:5.1f} img/s, v2 "
                f"{row['v2_img_s']:5.1f} img/s, v{args.previous} "
                f"{row['previous_img_s']:5.1f} img/s, ours "
                f"{row['ours_img_s']:5.1f} img/s "
                f"(x{row['ours_img_s'] / row['naive_img_s']:.1f} naive, "
                f"x{row['ours_img_s'] / row['v2_img_s']:.2f} v2, "
                f"x{row['ours_img_s'] / row['previous_img_s']:.2f} v{args.previous}; "
                f"first file after {row['ours_first_file_s']:.2f} s, then "
                f"{row['ours_steady_img_s']:.1f} img/s); "
                f"peak RSS naive {row['naive_self_mb']:.0f} MB, ours {row['ours_self_mb']:.0f} MB "
                f"(+ workers {row['ours_workers_mb']:.0f} MB)",
                flush=True,
            )
    RESULTS.mkdir(exist_ok=True)
    saved = {
        "repeats": args.repeats,
        "naive_repeats": args.naive_repeats,
        "rows": rows,
        "measured": measured(),
        "previous": args.previous + (" without the mirror" if unmirrored else ""),
        "ours": RENDER_VERSION,
    }
    (RESULTS / "predict.json").write_text(json.dumps(saved, indent=2))
    write_doc(rows, args.repeats, args.naive_repeats, saved["measured"], saved["previous"],
              RENDER_VERSION)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
