"""The model's input contract: how a thumbnail becomes the tensor the model sees.

Training, ONNX export, Dagster predictions and `mammo predict` all call this
module, so the model never sees an image prepared differently from the ones it
learned on. The graph takes float32 ``[N, 1, S, S]`` with the 8-bit display
values scaled to 0..1 (``pixel / 255``); mean/std normalization is *inside*
the graph, so no caller can get it wrong. Thumbnails are already square
(padded); shrinking them to S keeps near-white marker pixels (the same
marker-keeping shrink the thumbnails use), so a clip that survived the
thumbnail survives the model input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .thumbnails import shrink

#: The default model input side (see README "Model input size" for the measurement).
INPUT_SIZE = 224
FLAGS = ("biopsy", "mag")
#: Normalization the graph applies to its 0..1 input (a gray mammogram's typical spread).
MEAN, STD = 0.3, 0.3

CONTRACT = {
    "input_name": "image",
    "input_dtype": "float32",
    "input_shape": ["N", 1, "S", "S"],
    "input_scale": "8-bit display values / 255 (0 = black, 1 = white), MONOCHROME2",
    "normalization": f"inside the graph: (x - {MEAN}) / {STD}",
    "resize": "thumbnail (square, padded) shrunk to S x S, marker-keeping",
    "output_name": "probs",
    "outputs": list(FLAGS),
    "output_meaning": "independent sigmoid probabilities (multi-label)",
}


def prepare(img: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """An 8-bit grayscale image (a thumbnail) -> uint8 [size, size] model input."""
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {img.shape}")
    h, w = img.shape
    if h != w:  # pad to a square first, as thumbnails are
        side = max(h, w)
        padded = np.zeros((side, side), np.uint8)
        padded[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = img
        img = padded
    if img.shape[0] == size:
        return np.ascontiguousarray(img, dtype=np.uint8)
    if img.shape[0] > size:
        return shrink(img, size, size)
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))


def load(path: str | Path, size: int = INPUT_SIZE) -> np.ndarray:
    """A thumbnail PNG -> uint8 [size, size] model input."""
    with Image.open(path) as im:
        return prepare(np.asarray(im.convert("L")), size)


def to_batch(images: list[np.ndarray]) -> np.ndarray:
    """uint8 [size, size] inputs -> the graph's float32 [N, 1, S, S] in 0..1."""
    return (np.stack(images).astype(np.float32) / 255.0)[:, None]
