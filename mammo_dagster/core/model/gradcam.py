"""Where the model looked for a flag (torch needed: the `train` extra).

Grad-CAM for the image network: hooks on the ResNet body's last block
(`register_full_backward_hook`): the activations' channels are weighted by the mean
gradient of the flag's logit, summed, rectified, upsampled to the input and scaled to
0..1. A second-look model decides biopsy on its patches, so there the map is the
patches' own scores at their spots: exactly the objects the decision rests on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..files import atomic_write
from ..home import Home
from ..imaging import preprocess
from ..imaging.batch import thumbnail_name
from ..imaging.thumbnails import render_version, viewing_image
from .modelstore import ModelCard, model_dir


def cam_folder(home: Home, version: str) -> Path:
    """A model version's heatmap overlays (the `gradcam` asset writes them; the
    labeler's review mode reads them, or makes the missing ones)."""
    return model_dir(home.gradcam, version)


def cam_file(home: Home, version: str, sop_instance_uid: str, frame: int, flag: str) -> Path:
    if flag not in preprocess.FLAGS:
        raise ValueError(f"flag must be one of {preprocess.FLAGS}, got {flag!r}")
    name = thumbnail_name(sop_instance_uid, frame).removesuffix(".png")
    return cam_folder(home, version) / f"{name}_{flag}.png"


def load_torch_model(folder: Path):
    """The trained network of a model version (`model.pt` beside `model.onnx`)."""
    import torch

    from .train import ExportModel, network

    state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    second_look = any(k.startswith("patch_net.") for k in state)
    if second_look and "patch_net.lift_floor" not in state:  # trained before the floor
        state["patch_net.lift_floor"] = torch.tensor(0.0)
    mag_nets = len({k.split(".")[2] for k in state if k.startswith("image_net.nets.")})
    prefix = "image_net.nets.0." if mag_nets else "image_net." if second_look else ""
    metal = f"{prefix}0.0.1.weight" in state  # the metal stem wraps the first conv
    levels = state.get(f"{prefix}0.0.0.levels")
    levels = tuple(float(v) for v in levels) if levels is not None else None
    try:
        card = ModelCard.read(folder).to_dict()
        render = preprocess.model_render(card)
    except (OSError, ValueError, KeyError):
        card, render = {}, None  # no card: a model from before contract v5
    sets = preprocess.patch_sets(render or "")
    mirror = bool((card.get("config") or {}).get("mag_mirror", False))
    net = network(metal=metal, levels=levels, second_look=second_look, sets=sets,
                  mirror=mirror, mag_nets=max(mag_nets, 1))  # fmt: skip
    net.load_state_dict(state, strict=levels is not None or not metal)
    return ExportModel.wrap(net)


def gradcam(shipped, image: np.ndarray, flag: str, block: int | None = None) -> np.ndarray:
    """Heatmap (float32 [S, S], 0..1) of where `shipped` found `flag` in one model input.
    `block` picks a module of the encoder to hook (e.g. 6: ResNet18's layer3, a grid twice
    as fine); None, the encoder's output. Of several seeds' image networks (`MeanNet`),
    the mean of their heatmaps."""
    import torch.nn.functional as F

    nets = getattr(shipped.image_net, "nets", [shipped.image_net])
    cam = sum(_cam(shipped, net, image, flag, block) for net in nets) / len(nets)
    cam = F.interpolate(cam[None, None], size=image.shape, mode="bilinear", align_corners=False)
    cam = cam[0, 0].numpy()
    return (cam / cam.max() if cam.max() > 0 else cam).astype(np.float32)


def _cam(shipped, image_net, image: np.ndarray, flag: str, block: int | None):
    """One image network's Grad-CAM on its encoder's grid (a tensor, not yet scaled)."""
    import torch

    k = preprocess.FLAGS.index(flag)
    body = image_net[0]  # the convolutional encoder
    body = body if block is None else body[block]
    saved: dict = {}

    def forward_hook(_m, _i, out):
        saved["act"] = out

    def backward_hook(_m, _gi, gout):
        saved["grad"] = gout[0]

    h1 = body.register_forward_hook(forward_hook)
    h2 = body.register_full_backward_hook(backward_hook)
    try:
        x = torch.from_numpy(preprocess.to_batch([image])).requires_grad_(True)
        logits = image_net((x - shipped.mean) / shipped.std)
        shipped.zero_grad()
        logits[0, k].backward()
    finally:
        h1.remove()
        h2.remove()
    act, grad = saved["act"].detach()[0], saved["grad"].detach()[0]
    cam = torch.relu((grad.mean(dim=(1, 2))[:, None, None] * act).sum(0))
    return cam / cam.max() if cam.max() > 0 else cam


def _fit(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A heatmap stretched over an image of `shape` (thumbnails and inputs are square)."""
    if cam.shape == shape:
        return cam
    img = Image.fromarray(cam.astype(np.float32), mode="F")
    return np.asarray(img.resize(shape[::-1], Image.Resampling.BILINEAR))


def mask_padding(cam: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The heatmap over `image`, zero on the black padding that squares a thumbnail (the
    all-zero rows and columns at its edges) and rescaled to 0..1 over the rest: no marker
    is ever there, so heat there says nothing about the image."""
    cam = _fit(cam, image.shape).copy()
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    if not len(rows):
        return np.zeros_like(cam)
    keep = np.zeros(cam.shape, bool)
    keep[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
    cam[~keep] = 0.0
    top = cam.max()
    return (cam / top if top > 0 else cam).astype(np.float32)


def overlay(image: np.ndarray, cam: np.ndarray) -> Image.Image:
    """The gray image with the heatmap in red over it (RGB); a heatmap of another size
    is stretched over the image."""
    cam = _fit(cam, image.shape)
    gray = np.repeat(image[..., None].astype(np.float32), 3, axis=2)
    heat = np.zeros_like(gray)
    heat[..., 0] = 255 * cam
    alpha = 0.5 * cam[..., None]
    return Image.fromarray(np.clip(gray * (1 - alpha) + heat * alpha, 0, 255).astype(np.uint8))


def spot_map(
    shipped, patches: np.ndarray, spots: list, shape: tuple[int, int], mag: float = 0.0
) -> np.ndarray:
    """A second-look model's biopsy map over a thumbnail of `shape`: each patch's
    probability of showing a marker, as a disc of the patch's size at its spot, 0..1
    (the highest, as the flag takes the highest). A two-set model (contract v5) weighs
    its contact-size set by 1 - `mag` and its wide set by `mag` (the view's mag
    probability), as its biopsy flag leans on them."""
    import torch

    from ..imaging.lift import MAG_SCALE, PATCH_MM

    with torch.inference_mode():
        x = torch.from_numpy(preprocess.to_patch_batch([patches]))
        probs = torch.sigmoid(shipped.body.patch_net(x))[0].numpy()
    sets = shipped.body.sets
    k = len(probs) // sets
    out = np.zeros(shape, np.float32)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    radius = max(3.0, shape[0] * PATCH_MM / 2 / 300.0)  # ~the patch, on a ~30 cm side
    for i, ((y, x, _lift), p) in enumerate(zip(spots, probs, strict=False)):
        wide = sets > 1 and i >= k
        weight = (mag if wide else 1.0 - mag) if sets > 1 else 1.0
        r = radius * (MAG_SCALE if wide else 1.0)
        disc = np.exp(-(((yy - y) ** 2 + (xx - x) ** 2) / (2 * r**2)))
        np.maximum(out, weight * p * disc, out=out)
    return out


def mag_probability(shipped, image: np.ndarray) -> float:
    """The image network's mag probability for one uint8 model input."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(preprocess.to_batch([image]))
        logits = shipped.image_net((x - shipped.mean) / shipped.std)
    return float(torch.sigmoid(logits[0, preprocess.FLAGS.index("mag")]))


def heatmap(
    shipped,
    size: int,
    thumbnail: Path,
    flag: str,
    *,
    masked: bool = True,
    block: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(the thumbnail in gray, the heatmap of `flag` over it, 0..1): what `write_cam`
    draws. `masked` False keeps the heat on the padding, `block` hooks Grad-CAM elsewhere
    (see `gradcam`; for comparisons)."""
    from ..imaging.thumbnails import read_patches

    with Image.open(thumbnail) as im:
        full, render = np.asarray(im.convert("L")), render_version(im)
        patches, spots = read_patches(im)
    if flag == "biopsy" and shipped.second_look and patches is not None:
        two_sets = shipped.body.sets > 1
        mag = mag_probability(shipped, preprocess.prepare(full, size, render)) if two_sets else 0.0
        cam = spot_map(shipped, patches, spots, full.shape, mag)
    else:
        cam = gradcam(shipped, preprocess.prepare(full, size, render), flag, block)
    if not masked:
        cam = _fit(cam, full.shape)
        return full, (cam / cam.max() if cam.max() > 0 else cam).astype(np.float32)
    return full, mask_padding(cam, full)


def write_cam(shipped, size: int, thumbnail: Path, flag: str, dest: Path) -> Path:
    """Heatmap of `flag` for one thumbnail, drawn over the image a person sees of it
    (`thumbnails.viewing_image`, at full thumbnail resolution, so a small marker stays
    visible), written atomically."""
    _, cam = heatmap(shipped, size, thumbnail, flag)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest, "wb") as f:
        overlay(np.asarray(viewing_image(thumbnail)), cam).save(f, format="PNG")
    return dest
