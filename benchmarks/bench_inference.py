"""Model inference speed on the CPU: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8.

The shipped graph (normalize -> metal channel -> fastai ResNet18 -> sigmoid)
at each input size, the same batch of images for every runtime, in one run;
images/s is the median of 5 passes over 256 images (batch 32, 2 threads).
Also checks on the way that ONNX fp32 matches PyTorch and how often int8
decisions (at 0.5) agree with fp32.

    python benchmarks/bench_inference.py [--sizes 160 192 224] [--images 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
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


def _rate(fn, images: np.ndarray, passes: int = 5) -> float:
    fn(images[:32])  # warm-up
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        fn(images)
        times.append(time.perf_counter() - t0)
    return len(images) / statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[160, 192, 224])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from mammo_dagster.core.onnx_model import OnnxModel
    from mammo_dagster.core.train import (
        ExportModel,
        _torch_probs,
        export_onnx,
        network,
        quantize_int8,
    )

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    for size in args.sizes:
        model = ExportModel.wrap(network().eval())
        images = _images(args.images, size)
        fp32_path = export_onnx(model, work / f"m{size}.onnx", size)
        int8_path = quantize_int8(fp32_path, work / f"m{size}.int8.onnx", images[:64])
        fp32, int8 = OnnxModel(fp32_path, args.threads), OnnxModel(int8_path, args.threads)
        torch_p, fp32_p, int8_p = (
            _torch_probs(model, images),
            fp32.probs(images),
            int8.probs(images),
        )
        row = {
            "size": size,
            "torch_img_s": _rate(partial(_torch_probs, model, batch=32), images),
            "onnx_fp32_img_s": _rate(partial(fp32.probs, batch=32), images),
            "onnx_int8_img_s": _rate(partial(int8.probs, batch=32), images),
            "fp32_max_diff_vs_torch": float(np.max(np.abs(fp32_p - torch_p))),
            "int8_decision_agreement": float(np.mean((int8_p >= 0.5) == (fp32_p >= 0.5))),
        }
        rows.append(row)
        print(
            f"{size:4d} px: torch eager {row['torch_img_s']:6.1f} img/s | ORT fp32 "
            f"{row['onnx_fp32_img_s']:6.1f} | ORT int8 {row['onnx_int8_img_s']:6.1f} "
            f"(x{row['onnx_int8_img_s'] / row['torch_img_s']:.1f} vs torch) | fp32 max diff "
            f"{row['fp32_max_diff_vs_torch']:.1e}, int8 agreement "
            f"{row['int8_decision_agreement']:.1%}",
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inference.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
