"""The model's input contract: how a thumbnail becomes the tensors the model sees.

Training, ONNX export, Dagster predictions and `mammo predict` all call this
module, so the model never sees an image prepared differently from the ones it
learned on. The graph takes float32 ``image`` ``[N, 1, S, S]``: the thumbnail's 8-bit
levels (the window up to ``display.WINDOW_TOP``, above it the headroom of the local
lift, see `core.imaging.lift`) scaled to 0..1 (``pixel / 255``), shrunk to S keeping what
stands in the headroom; and, for rendering contract v3, float32 ``patches``
``[N, K, C, P, P]``: the thumbnail's second look, carried in its PNG. Mean/std
normalization is *inside* the graph, so no caller can get it wrong. A thumbnail
carries the version of the rendering contract it was made with; a model records the
one it was trained on, and `load` refuses a mismatch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .display import WINDOW_TOP
from .lift import (
    CANDIDATE_MM,
    COMPACT_MM,
    MAG_SCALE,
    OBJECT_SKIN_MM,
    OBJECT_SPOTS,
    PATCH_CHANNELS,
    PATCH_LIFT_FULL,
    PATCH_MM,
    PATCH_PX,
    PATCHES,
    SKIN_MM,
)
from .thumbnails import (
    LEGACY_RENDER,
    LIFT_RENDERS,
    RENDER_VERSION,
    WIDE_RENDERS,
    read_patches,
    render_version,
    shrink,
)

#: The image network's input side (mag; biopsy is decided on the patches): measured in
#: docs/benchmarks/robustness.md, 128 px beat 160 on the mag flag and trains faster.
INPUT_SIZE = 128
FLAGS = ("biopsy", "mag")
#: Normalization the graph applies to its 0..1 input (a gray mammogram's typical spread).
MEAN, STD = 0.3, 0.3


def patch_sets(render: str) -> int:
    """How many sets of PATCHES patches a thumbnail of contract `render` carries."""
    return 2 if render in WIDE_RENDERS else 1


CONTRACT = {
    "input_name": "image",
    "input_dtype": "float32",
    "input_shape": ["N", 1, "S", "S"],
    "input_scale": "8-bit display values / 255 (0 = black, 1 = white), MONOCHROME2",
    "render": RENDER_VERSION,
    "display": f"the VOI window maps to 0..{WINDOW_TOP}; the levels above rise toward 255 "
    "with the local lift of the brightest value in each pixel's cell: how far it stands "
    "above its surroundings, in window widths, 0 over air (core.imaging.lift)",
    "patches_name": "patches",
    "patches_shape": [
        "N",
        PATCHES * patch_sets(RENDER_VERSION),
        len(PATCH_CHANNELS),
        PATCH_PX,
        PATCH_PX,
    ],  # fmt: skip
    "patches_channels": list(PATCH_CHANNELS),
    "patches_scale": f"uint8 / 255: the window levels, and the lift / {PATCH_LIFT_FULL}",
    "patches_meaning": f"the thumbnail's second look: {PATCH_MM:g}-mm patches around its "
    f"{PATCHES} highest-lift spots (at least {CANDIDATE_MM:g} mm apart), then (v5) "
    f"{PATCHES} patches {MAG_SCALE:g}x as wide around spots {MAG_SCALE:g}x as far apart; "
    f"(v6) one straight bright object takes at most {OBJECT_SPOTS} spots of a set while "
    f"others remain; (v7) nothing within {SKIN_MM:g} mm of the air is lifted; (v8) nor "
    f"any compact round object (at most {COMPACT_MM:g} mm long) that reaches within "
    f"{OBJECT_SKIN_MM:g} mm of it; "
    "carried in the thumbnail PNG; v3/v4 models take the first set only, v1/v2 models "
    "have no patches input",
    "normalization": f"inside the graph: (x - {MEAN}) / {STD}",
    "resize": "thumbnail (square, padded) shrunk to S x S, marker-keeping",
    "output_name": "probs",
    "outputs": list(FLAGS),
    "output_meaning": "independent sigmoid probabilities (multi-label)",
}


def prepare(img: np.ndarray, size: int = INPUT_SIZE, render: str = RENDER_VERSION) -> np.ndarray:
    """An 8-bit grayscale image (a thumbnail of rendering version `render`) -> uint8
    [size, size] model input."""
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
        return shrink(
            img,
            size,
            size,
            keep_metal=render != LEGACY_RENDER,
            keep_headroom=render in LIFT_RENDERS,
        )
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))


class RenderMismatch(ValueError):
    """A thumbnail rendered by another version of the rendering contract than expected."""


def load(path: str | Path, size: int = INPUT_SIZE, render: str | None = None) -> np.ndarray:
    """A thumbnail PNG -> uint8 [size, size] model input image (see `load_input` for the
    patches too).

    `render` is the rendering contract version the caller's model expects (see
    `thumbnails.RENDER_VERSION`); a thumbnail of another version raises RenderMismatch.
    """
    return load_input(path, size, render)[0]


def load_input(
    path: str | Path, size: int = INPUT_SIZE, render: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """A thumbnail PNG -> (uint8 [size, size] model input, its uint8 patches or None for
    a v1/v2 thumbnail); RenderMismatch as `load`."""
    with Image.open(path) as im:
        found = render_version(im)
        if render is not None and found != render:
            raise RenderMismatch(
                f"{Path(path).name} was rendered by thumbnail contract v{found}, the model "
                f"expects v{render}: re-run the thumbnails (Dagster: materialize thumbnails "
                "for the drop), or retrain"
            )
        patches, _spots = read_patches(im)
        return prepare(np.asarray(im.convert("L")), size, found), patches


def to_patch_batch(patches: list[np.ndarray]) -> np.ndarray:
    """uint8 [K, C, P, P] patches -> the graph's float32 [N, K, C, P, P] in 0..1."""
    return np.stack(patches).astype(np.float32) / 255.0


def thumbnail_render(paths: list[Path]) -> str:
    """The one rendering contract version of these thumbnails (RenderMismatch if mixed)."""
    found: dict[str, Path] = {}
    for path in paths:
        with Image.open(path) as im:
            found.setdefault(render_version(im), Path(path))
    if len(found) > 1:
        raise RenderMismatch(
            "thumbnails of several rendering versions ("
            + ", ".join(f"v{v}: {p.name}" for v, p in sorted(found.items()))
            + "): re-run the thumbnails so that all are current"
        )
    return next(iter(found), RENDER_VERSION)


def model_render(card: dict) -> str | None:
    """The rendering contract a model card was trained on (None without a card; "1" for
    cards from before the version was recorded)."""
    if not card:
        return None
    return str((card.get("preprocessing") or {}).get("render", LEGACY_RENDER))


def to_batch(images: list[np.ndarray]) -> np.ndarray:
    """uint8 [size, size] inputs -> the graph's float32 [N, 1, S, S] in 0..1."""
    return (np.stack(images).astype(np.float32) / 255.0)[:, None]
