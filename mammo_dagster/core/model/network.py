"""The networks: the image network (fastai ResNet18), the second look, the shipped graph.

Needs torch (the `train` extra). Rendering contract v3 models (`MammoNet`) take two
inputs: the model input image (for the mag flag) and the thumbnail's patches around
its highest-lift spots (`core.imaging.lift`), which a small patch network scores one by one; the
biopsy flag is the highest patch score (multiple-instance learning from image labels: an
image has a marker when one of its patches shows one). Models of contracts v1/v2 take
the image alone (a ResNet18 whose metal channel marks the brightest levels, `metal_stem`).
The exported graph includes the normalization and a sigmoid (see preprocess.py).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..imaging import preprocess
from ..imaging.display import WINDOW_TOP
from ..imaging.lift import PATCH_CHANNELS
from ..imaging.thumbnails import RENDER_VERSION
from .config import LIFT_FLOOR

#: The metal channel of rendering contract v2 marks model-input pixels from about this
#: display level up: there only values near the stored extreme get that far.
METAL_LEVEL = 250
#: The levels (from, full) over which the metal channel rises, per rendering contract: v2
#: a step just below 255; v3 a ramp over the headroom, whose levels grade how far a pixel
#: stands above its surroundings (core.imaging.lift).
METAL_LEVELS = {"1": (METAL_LEVEL - 3.0, METAL_LEVEL + 1.0),
                "2": (METAL_LEVEL - 3.0, METAL_LEVEL + 1.0),
                "3": (228.0, 252.0), "4": (228.0, 252.0), "5": (228.0, 252.0),
                "6": (228.0, 252.0), "7": (228.0, 252.0), "8": (228.0, 252.0)}  # fmt: skip


class MetalChannel(nn.Module):
    """Puts a channel marking the brightest levels (`levels`, a buffer: a saved state
    rebuilds the same stem) beside the normalized image, spread over 3 x 3 so that a
    1-px clip survives the stride-2 stem."""

    def __init__(self, levels: tuple[float, float]) -> None:
        super().__init__()
        self.register_buffer("levels", torch.tensor([float(v) for v in levels]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = (x * preprocess.STD + preprocess.MEAN) * 255.0
        lo, hi = self.levels[0], self.levels[1]
        metal = ((level - lo) / (hi - lo)).clamp(0.0, 1.0)
        metal = F.max_pool2d(metal, 3, stride=1, padding=1)
        return torch.cat([x, (metal - 0.5) * 4.0], dim=1)


def metal_stem(conv1: nn.Module, levels: tuple[float, float] = METAL_LEVELS["2"]) -> nn.Module:
    """`conv1` fed with the image and its metal channel (see `MetalChannel`); only the
    image comes in, so the exported graph's input contract is unchanged."""
    return nn.Sequential(MetalChannel(levels), conv1)


def _image_kernels_from_rgb(conv: nn.Conv2d) -> None:
    """ImageNet's first convolution on [image, metal]: the image channel gets the sum of
    the RGB kernels (gray = R = G = B), the metal channel zeros, so the pretrained
    network starts exactly where it would on the image alone."""
    from torchvision.models import ResNet18_Weights, resnet18

    rgb = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1).conv1.weight  # from the cache
    with torch.no_grad():
        conv.weight[:, 0] = rgb.sum(dim=1)
        conv.weight[:, 1] = 0.0


def add_metal_stem(net: nn.Module, pretrained: bool, levels: tuple[float, float] | None = None):
    """Put `metal_stem` in front of the first convolution of a fastai ResNet built with
    two input channels (its pretrained kernels set up by `_image_kernels_from_rgb`)."""
    if pretrained:
        _image_kernels_from_rgb(net[0][0])
    net[0][0] = metal_stem(net[0][0], levels or METAL_LEVELS[RENDER_VERSION])


def image_network(
    pretrained: bool = False, metal: bool = True, levels: tuple[float, float] | None = None
) -> nn.Module:
    """The fastai ResNet18 (1 image channel in, 2 logits out), with the metal channel."""
    from fastai.vision.learner import create_vision_model
    from torchvision.models import resnet18

    net = create_vision_model(resnet18, n_out=2, n_in=2 if metal else 1, pretrained=pretrained)
    if metal:
        add_metal_stem(net, pretrained, levels)
    return net


def _block(c_in: int, c_out: int, stride: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class PatchNet(nn.Module):
    """The second look: a small CNN that scores each patch (a logit: marker or not) and
    answers the highest score of an image's patches."""

    def __init__(self, channels: int = len(PATCH_CHANNELS), lift_floor: float = LIFT_FLOOR) -> None:
        super().__init__()
        self.register_buffer("lift_floor", torch.tensor(float(lift_floor)))
        self.features = nn.Sequential(
            _block(channels, 16, 1), _block(16, 32, 2), _block(32, 32, 1),
            _block(32, 64, 2), _block(64, 64, 1),
        )  # fmt: skip
        self.score = nn.Linear(64, 1)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """[N, K, C, P, P] patches in 0..1 -> [N, K] patch logits."""
        n, k = patches.shape[:2]
        x = patches.flatten(0, 1)
        c = PATCH_CHANNELS.index("lift")
        lift = x[:, c : c + 1]
        top = lift.amax(dim=(2, 3), keepdim=True).clamp_min(self.lift_floor).clamp_min(1e-6)
        lift = torch.where(self.lift_floor > 0, lift / top, lift)  # no branch: it exports
        x = torch.cat([x[:, :c], lift, x[:, c + 1 :]], dim=1)
        x = (x - preprocess.MEAN) / preprocess.STD
        h = torch.amax(self.features(x), dim=(2, 3))
        return self.score(h).view(n, k)


class MeanNet(nn.Module):
    """Image networks trained alike from different seeds: the mean of their logits (one
    network's mag ranking swings with its seed; `benchmarks/bench_robustness.py`)."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x) for net in self.nets]).mean(dim=0)


class MammoNet(nn.Module):
    """Rendering contract v3's model: the biopsy logit is the second look's highest patch
    logit, the mag logit the image network's. With `sets` 2 (contract v5) the patches
    come as two sets, contact-size then `lift.MAG_SCALE` times as wide, and the biopsy
    logit leans on the wide set as far as the image network believes the view magnified.
    With `mirror` the mag logit it answers is the mean of the image network's on the image
    and on its left-right mirror (`benchmarks/bench_mag_flip.py`); the biopsy blend keeps
    the plain logit, on which the patch sets were trained to lean."""

    def __init__(
        self, image_net: nn.Module, patch_net: nn.Module, sets: int = 1, mirror: bool = False
    ) -> None:
        super().__init__()
        self.image_net = image_net
        self.patch_net = patch_net
        self.sets = sets
        self.mirror = mirror

    def forward(self, image: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        if self.mirror:  # one pass over both: the int8 graph then keeps one copy of weights
            n = image.shape[0]
            both = self.image_net(torch.cat([image, torch.flip(image, dims=[-1])]))[:, 1]
            plain, mag = both[:n], (both[:n] + both[n:]) / 2
        else:
            plain = mag = self.image_net(image)[:, 1]
        logits = self.patch_net(patches)
        if self.sets == 1:
            biopsy = torch.amax(logits, dim=1)
        else:
            k = logits.shape[1] // 2
            contact, wide = torch.amax(logits[:, :k], dim=1), torch.amax(logits[:, k:], dim=1)
            biopsy = contact + torch.sigmoid(plain) * (wide - contact)
        return torch.stack([biopsy, mag], dim=1)


def network(
    pretrained: bool = False,
    metal: bool = True,
    levels: tuple[float, float] | None = None,
    second_look: bool = True,
    sets: int | None = None,
    mirror: bool = False,
    mag_nets: int = 1,
) -> nn.Module:
    """The network of the current contract (`MammoNet` over `sets` patch sets, by default
    as many as the current rendering carries; with `mag_nets` > 1 its image network a
    `MeanNet` of that many), or with `second_look` False the image network alone
    (contracts v1/v2)."""
    image_net = image_network(pretrained, metal, levels)
    if not second_look:
        return image_net
    if mag_nets > 1:
        rest = [image_network(pretrained, metal, levels) for _ in range(mag_nets - 1)]
        image_net = MeanNet([image_net, *rest])
    return MammoNet(image_net, PatchNet(), sets or preprocess.patch_sets(RENDER_VERSION), mirror)


class Shipped(nn.Module):
    """The graph that ships: normalize the image -> network -> sigmoid."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("mean", torch.tensor(preprocess.MEAN))
        self.register_buffer("std", torch.tensor(preprocess.STD))

    @property
    def second_look(self) -> bool:
        return isinstance(self.body, MammoNet)

    @property
    def image_net(self) -> nn.Module:
        return self.body.image_net if self.second_look else self.body

    def forward(self, image: torch.Tensor, patches: torch.Tensor | None = None) -> torch.Tensor:
        x = (image - self.mean) / self.std
        logits = self.body(x, patches) if self.second_look else self.body(x)
        return torch.sigmoid(logits)


class ExportModel:
    """Builds the graph that ships (`Shipped`)."""

    @staticmethod
    def wrap(model: nn.Module) -> Shipped:
        return Shipped(model).eval()


def headroom_jitter(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Training augmentation of 0..1 model inputs (a batch [N, 1, S, S]): per image, the
    headroom levels (above display.WINDOW_TOP) are bent by a random gamma and dimmed,
    and a share of images is blurred a little, as vendors' processing LUTs and lossy
    codecs do to small bright objects. `strength` 0 leaves the batch unchanged."""
    if strength <= 0:
        return x
    n = x.shape[0]
    top = WINDOW_TOP / 255.0
    room = 1.0 - top
    gamma = torch.exp(torch.empty(n, 1, 1, 1).uniform_(-0.5 * strength, 0.5 * strength))
    dim = 1.0 - torch.empty(n, 1, 1, 1).uniform_(0.0, 0.3 * strength)
    t = ((x - top) / room).clamp(0.0, 1.0)
    bent = top + room * dim * t.pow(gamma)
    x = torch.where(x > top, bent, x)
    blur = torch.rand(n) < 0.3 * strength
    if blur.any():
        sigma = float(torch.empty(1).uniform_(0.4, 0.9))
        r = torch.arange(-2, 3, dtype=x.dtype)
        k = torch.exp(-(r**2) / (2 * sigma**2))
        k = k / k.sum()
        sub = x[blur]
        sub = F.conv2d(F.pad(sub, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5))
        sub = F.conv2d(F.pad(sub, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1))
        x = x.clone()
        x[blur] = sub
    return x


def patch_zoom(p: torch.Tensor, zoom: float, share: float = 0.5) -> torch.Tensor:
    """A `share` of 0..1 patches [N, K, C, P, P] magnified about their centre by a random
    factor up to 1 + `zoom` (every channel alike): an object seen larger than at contact,
    as in a magnification view read at another factor than its own. The patches are
    centred on their object, so it stays in view."""
    if zoom <= 0:
        return p
    n, k, c, s, _ = p.shape
    x = p.reshape(n * k, c, s, s)
    factor = 1.0 + torch.rand(n * k) * zoom
    factor = torch.where(torch.rand(n * k) < share, factor, torch.ones_like(factor))
    theta = torch.zeros(n * k, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / factor
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", align_corners=False).view(n, k, c, s, s)


def patch_jitter(
    p: torch.Tensor, strength: float = 1.0, raise_window: float = 0.25, zoom: float = 0.0
) -> torch.Tensor:
    """Training augmentation of 0..1 patches [N, K, C, P, P]: each batch flipped and
    transposed at random (the eight symmetries of a square), per image the lift
    channel bent by a random gamma and dimmed (another vendor's processing, a lossy
    codec), and a `raise_window` share of the patches' window channel raised toward the window's top
    (a background brighter than the window shows, an implant: the shape is then in the
    lift channel only), and with `zoom` half the patches magnified (`patch_zoom`).
    `strength` 0 leaves the flips only."""
    if torch.rand(1) < 0.5:
        p = p.flip(-1)
    if torch.rand(1) < 0.5:
        p = p.flip(-2)
    if torch.rand(1) < 0.5:
        p = p.transpose(-1, -2)
    if strength <= 0:
        return p
    p = patch_zoom(p, zoom)
    n = p.shape[0]
    gamma = torch.exp(torch.empty(n, 1, 1, 1).uniform_(-0.4 * strength, 0.4 * strength))
    dim = 1.0 - torch.empty(n, 1, 1, 1).uniform_(0.0, 0.3 * strength)
    lift = PATCH_CHANNELS.index("lift")
    p = p.clone()
    p[:, :, lift] = (p[:, :, lift] * dim).clamp(0.0, 1.0).pow(gamma)
    window, k = PATCH_CHANNELS.index("window"), p.shape[1]
    raised = torch.empty(n, k, 1, 1).uniform_(0.2, 0.8) * (
        torch.rand(n, k, 1, 1) < raise_window * strength
    )
    p[:, :, window] = torch.minimum(p[:, :, window] + raised, torch.tensor(WINDOW_TOP / 255.0))
    return p
