"""Model inference speed on the CPU: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8.

Two graphs at each input size, side by side in one run: the shipped second-look graph
(normalize -> metal channel -> fastai ResNet18 for mag, a patch CNN over 8 patches for
biopsy -> sigmoid) and, as the baseline, the image-only graph every model before it
shipped. The same images (and patches) for every runtime; images/s is the median of 5
passes over 256 images (batch 32, 2 threads). Also checks on the way that ONNX fp32
matches PyTorch and how often int8 decisions (at 0.5) agree with fp32.

    python benchmarks/bench_inference.py [--sizes 128 160 224] [--images 256]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _images(n: int, size: int) -> np.ndarray:
    """Mammogram-like inputs (a bright blob on black with noise and a few white specks)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(0.2, 0.5), rng.uniform(0.3, 0.7)
        blob = np.exp(-(((xx - cx) / 0.35) ** 2 + ((yy - cy) / 0.45) ** 2)) * 180
        img = np.clip(blob + rng.normal(0, 12, (size, size)), 0, 255)
        for _ in range(rng.integers(0, 3)):
            y, x = rng.integers(0, size - 4, 2)
            img[y : y + 3, x : x + 3] = 255
        out.append(img.astype(np.uint8))
    return np.stack(out)


def _patches(n: int) -> np.ndarray:
    """Patch-like inputs: dim texture with a bright stroke in some."""
    from mammo_dagster.core.imaging.lift import PATCH_CHANNELS, PATCH_PX, PATCHES

    rng = np.random.default_rng(1)
    out = rng.normal(90, 20, (n, PATCHES, len(PATCH_CHANNELS), PATCH_PX, PATCH_PX))
    out[:, :, :, 14:18, 8:24] = 240
    return np.clip(out, 0, 255).astype(np.uint8)


def _rate(fn, n: int, passes: int = 5) -> float:
    fn(32)  # warm-up
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        fn(n)
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def _measure(size: int, graph: str, images, patches, work: Path, threads: int) -> dict:
    """One graph at one size: its three runtimes' rates and agreements."""
    from mammo_dagster.core.model.export import export_onnx, quantize_int8
    from mammo_dagster.core.model.network import ExportModel, network
    from mammo_dagster.core.model.train import _torch_probs
    from mammo_dagster.core.prediction.onnx_model import OnnxModel

    model = ExportModel.wrap(network(second_look=patches is not None).eval())
    with contextlib.redirect_stdout(io.StringIO()):
        fp32_path = export_onnx(model, work / f"{graph}{size}.onnx", size)
    calibration = None if patches is None else patches[:64]
    int8_path = quantize_int8(
        fp32_path, work / f"{graph}{size}.int8.onnx", images[:64], calibration
    )
    fp32, int8 = OnnxModel(fp32_path, threads), OnnxModel(int8_path, threads)

    def sub(n: int) -> tuple:
        return images[:n], None if patches is None else patches[:n]

    torch_p = _torch_probs(model, images, patches)
    fp32_p, int8_p = fp32.probs(images, patches), int8.probs(images, patches)
    return {
        "size": size,
        "graph": graph,
        "torch_img_s": _rate(lambda n: _torch_probs(model, *sub(n), batch=32), len(images)),
        "onnx_fp32_img_s": _rate(lambda n: fp32.probs(*sub(n), batch=32), len(images)),
        "onnx_int8_img_s": _rate(lambda n: int8.probs(*sub(n), batch=32), len(images)),
        "fp32_max_diff_vs_torch": float(np.max(np.abs(fp32_p - torch_p))),
        "int8_decision_agreement": float(np.mean((int8_p >= 0.5) == (fp32_p >= 0.5))),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 224])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    for size in args.sizes:
        images = _images(args.images, size)
        for graph in ("image-only", "second-look"):
            patches = _patches(args.images) if graph == "second-look" else None
            row = _measure(size, graph, images, patches, work, args.threads)
            rows.append(row)
            print(
                f"{size:4d} px {graph:11s}: torch eager {row['torch_img_s']:6.1f} img/s | ORT "
                f"fp32 {row['onnx_fp32_img_s']:6.1f} | ORT int8 {row['onnx_int8_img_s']:6.1f} "
                f"(x{row['onnx_int8_img_s'] / row['torch_img_s']:.1f} vs torch) | fp32 max "
                f"diff {row['fp32_max_diff_vs_torch']:.1e}, int8 agreement "
                f"{row['int8_decision_agreement']:.1%}",
                flush=True,
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inference.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
