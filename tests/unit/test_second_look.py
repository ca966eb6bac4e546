"""The second look's training: folds by patient, out-of-fold scores, a shipped network."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_dagster.core.imaging.lift import PATCH_CHANNELS, PATCH_PX, PATCHES


def _patches(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dim texture patches; a positive image has a bright bar (lift and window) in one."""
    rng = np.random.default_rng(seed)
    p = rng.normal(60, 12, (n, PATCHES, len(PATCH_CHANNELS), PATCH_PX, PATCH_PX))
    p[:, :, 1] = rng.normal(10, 5, (n, PATCHES, PATCH_PX, PATCH_PX))
    y = (np.arange(n) % 2).astype(np.float32)
    for i in np.flatnonzero(y):
        k = rng.integers(PATCHES)
        p[i, k, :, 14:18, 6:26] = 230
    return np.clip(p, 0, 255).astype(np.uint8), y


def test_folds_keep_a_patients_images_together() -> None:
    from mammo_dagster.core.model.second_look import folds_of

    patients = [f"p{i // 3}" for i in range(30)]
    fold = folds_of(patients, 3)
    assert set(fold) == {0, 1, 2}
    for p in set(patients):
        assert len({f for f, q in zip(fold, patients, strict=True) if q == p}) == 1
    assert (folds_of(patients, 3) == fold).all()  # deterministic


def test_out_of_fold_scores_come_from_networks_that_never_saw_them(monkeypatch) -> None:
    from mammo_dagster.core.model import second_look as sl

    patches, y = _patches(30)
    patients = [f"p{i // 3}" for i in range(30)]
    trained_on: list[set[int]] = []

    def fake_fit(p, labels, valid, config):  # remembers its images by their first byte
        trained_on.append({int(v) for v in p[:, 0, 0, 0, 0]})
        return len(trained_on) - 1

    def fake_probs(net, p, batch=64):  # each score names the network that gave it
        return np.full(len(p), float(net), np.float32)

    for i in range(30):
        patches[i, 0, 0, 0, 0] = i
    monkeypatch.setattr(sl, "fit_patch_net", fake_fit)
    monkeypatch.setattr(sl, "patch_probs", fake_probs)
    monkeypatch.setattr(sl, "fit_auc", lambda net, p, labels: 1.0)  # every fit a healthy one
    said: list[str] = []
    look = sl.train_second_look(
        patches, y, patients, np.arange(24, 30), sl.PatchConfig(folds=3), said.append
    )
    assert [s.split(" (")[0] for s in said] == [  # a retrain is minutes: it says where it is
        "second look: fold network 1/3 trained", "second look: fold network 2/3 trained",
        "second look: fold network 3/3 trained", "second look: the network that ships trained",
    ]  # fmt: skip
    assert look.folds == 3 and look.oof is not None and look.oof.shape == (30,)
    assert len(trained_on) == 4 and trained_on[3] == set(range(30))  # then the shipped one
    assert look.net == 3
    fold = sl.folds_of(patients, 3)
    for i in range(30):
        net = int(look.oof[i])
        assert net < 3 and i not in trained_on[net]  # scored by a network that never saw it
        # ...nor any image of its patient
        assert not {j for j in range(30) if patients[j] == patients[i]} & trained_on[net]
        assert trained_on[net] == {j for j in range(30) if fold[j] != fold[i]}
    # too few of a class in some fold: no folds, the caller falls back to validation
    trained_on.clear()
    one_class = sl.train_second_look(patches, np.zeros(30, np.float32), patients, np.arange(6),
                                     sl.PatchConfig(folds=3))  # fmt: skip
    assert one_class.oof is None and one_class.folds == 0 and len(trained_on) == 1


def test_a_collapsed_fit_is_fitted_again_from_the_next_seed(monkeypatch) -> None:
    from mammo_dagster.core.model import second_look as sl

    patches, y = _patches(30)
    patients = [f"p{i // 3}" for i in range(30)]
    seeds: list[int] = []
    ranked = iter([0.65, 1.0, 0.99, 0.5, 0.7, 0.6, 0.95])  # each fit, in order

    def fake_fit(p, labels, valid, config):
        seeds.append(config.seed)
        return len(seeds) - 1

    monkeypatch.setattr(sl, "fit_patch_net", fake_fit)
    monkeypatch.setattr(sl, "fit_auc", lambda net, p, labels: next(ranked))
    monkeypatch.setattr(sl, "patch_probs", lambda net, p, batch=64: np.zeros(len(p), np.float32))
    said: list[str] = []
    look = sl.train_second_look(
        patches, y, patients, np.arange(24, 30), sl.PatchConfig(folds=3, seed=7), said.append
    )
    # fold 1: collapsed, then fine; fold 2: fine; fold 3: three poor fits, the best kept
    # (0.7, the 2nd of them); the shipped one: fine at once
    assert look.fits == {"fold 1": [0.65, 1.0], "fold 2": [0.99], "fold 3": [0.5, 0.7, 0.6],
                         "shipped": [0.95]}  # fmt: skip
    assert seeds == [7, 8, 7, 7, 8, 9, 7]
    assert look.net == 6
    assert "2 fits, ranking their own training images at AUC 0.65, 1.00" in said[0]
    assert "fits" not in said[1] and "fits" not in said[3]
    assert "none reached 0.9, the best kept" in said[2]


def test_a_healthy_fit_passes_the_check() -> None:
    """Real networks on separable patches: the fits stop at the first that learned, which
    is kept, and a seed fits the same network whatever ran before it."""
    import random

    from mammo_dagster.core.model import second_look as sl

    patches, y = _patches(40)
    config = sl.PatchConfig(epochs=6, folds=0)
    net, fits = sl.fit_checked(patches, y, None, config)
    assert fits[-1] >= sl.MIN_FIT_AUC and all(f < sl.MIN_FIT_AUC for f in fits[:-1])
    assert sl.fit_auc(net, patches, y) == fits[-1]
    random.seed(12345)  # another state of the generator fastai shuffles with
    assert sl.fit_checked(patches, y, None, config)[1] == fits
    _, none = sl.fit_checked(patches, np.zeros(40, np.float32), None, sl.PatchConfig(epochs=1))
    assert none == []  # one class: nothing to rank, one fit


def test_patch_jitter_keeps_shapes_and_range() -> None:
    import torch

    from mammo_dagster.core.model.network import patch_jitter

    x = torch.rand(4, PATCHES, len(PATCH_CHANNELS), PATCH_PX, PATCH_PX)
    out = patch_jitter(x, 1.0)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    window = PATCH_CHANNELS.index("window")
    same = patch_jitter(x, 0.0)  # flips only: the multiset of values is unchanged
    torch.testing.assert_close(same[:, :, window].sum(), x[:, :, window].sum())


def test_patch_zoom_magnifies_about_the_centre() -> None:
    """A skin BB on a magnification view is larger than any contact view shows one; the
    zoom shows the patch network such objects while it trains."""
    import torch

    from mammo_dagster.core.model.network import patch_jitter, patch_zoom

    r = torch.arange(PATCH_PX, dtype=torch.float32) - (PATCH_PX - 1) / 2
    disc = ((r[:, None] ** 2 + r[None, :] ** 2) < 4.0**2).float()  # 4-px radius, centred
    x = disc.expand(3, PATCHES, len(PATCH_CHANNELS), PATCH_PX, PATCH_PX).clone()
    assert patch_zoom(x, 0.0) is x
    torch.testing.assert_close(patch_zoom(x, 1e-4, share=1.0), x, atol=1e-3, rtol=0)
    torch.manual_seed(0)
    big = patch_zoom(x, 1.0, share=1.0)
    assert big.shape == x.shape and big.min() >= 0 and big.max() <= 1
    area = big.sum(dim=(-1, -2))  # [3, K, C]: the channels of a patch grow alike
    torch.testing.assert_close(area[..., 0], area[..., 1])
    ratio = area[..., 0] / disc.sum()
    assert (ratio > 1.05).all() and (ratio < 4.2).all()  # up to 2x wider: up to 4x the area
    assert len(set(ratio.flatten().tolist())) > 1  # a factor per patch
    w = big[..., 0, :, :]
    cy = (w.sum(-1) * r).sum(-1) / w.sum((-1, -2))
    cx = (w.sum(-2) * r).sum(-1) / w.sum((-1, -2))
    assert cy.abs().max() < 0.5 and cx.abs().max() < 0.5  # the object stays centred
    torch.manual_seed(1)
    share = patch_zoom(x, 1.0, share=0.5).sum(dim=(-1, -2, -3)) / (2 * disc.sum())
    assert 0 < (share > 1.01).float().mean() < 1  # only some patches are zoomed
    jittered = patch_jitter(x, 1.0, raise_window=0.0, zoom=1.0)
    assert jittered.shape == x.shape and jittered.min() >= 0 and jittered.max() <= 1


def test_the_patch_net_reads_a_dim_clip_as_it_reads_a_bright_one() -> None:
    """A clip over an implant rises only as far as the room left: above the floor, the
    patch network sees the lift channel against the patch's own highest lift."""
    import torch

    from mammo_dagster.core.model.network import LIFT_FLOOR, PatchNet

    torch.manual_seed(0)
    lift = PATCH_CHANNELS.index("lift")
    bright = torch.rand(2, PATCHES, len(PATCH_CHANNELS), PATCH_PX, PATCH_PX) * 0.2
    bright[:, :, lift, 14:18, 6:26] = 0.9  # a bar with 1.8 window widths of lift
    dim = bright.clone()
    dim[:, :, lift] *= 0.4  # the same bar at 0.72: still above the floor (0.5)
    assert LIFT_FLOOR < 0.9 * 0.4
    net, before = PatchNet().eval(), PatchNet(lift_floor=0.0).eval()
    before.load_state_dict(net.state_dict() | {"lift_floor": torch.tensor(0.0)})
    with torch.no_grad():
        torch.testing.assert_close(net(dim), net(bright))
        assert not torch.allclose(before(dim), before(bright))
        faint = bright.clone()
        faint[:, :, lift] *= 0.1  # below the floor: no longer read as the same bar
        assert not torch.allclose(net(faint), net(bright))


def test_with_two_sets_the_biopsy_logit_follows_the_wide_set_as_far_as_the_view_is_magnified():
    """Contract v5: contact-size patches, then wide ones; the image network's mag logit
    decides which set's highest patch logit the biopsy flag reads."""
    import torch
    from torch import nn

    from mammo_dagster.core.model.network import MammoNet

    class Image(nn.Module):  # mag logit = the image's first pixel
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x[:, 0, 0, 0]
            return torch.stack([torch.zeros_like(m), m], dim=1)

    class Patch(nn.Module):  # patch logit = the patch's first pixel
        def forward(self, p: torch.Tensor) -> torch.Tensor:
            return p[:, :, 0, 0, 0]

    patches = torch.zeros(3, 2 * PATCHES, 2, 4, 4)
    patches[:, 2, 0, 0, 0] = 5.0  # the contact set's best patch
    patches[:, PATCHES + 1, 0, 0, 0] = -3.0  # the wide set: all at most 0
    patches[:, PATCHES:, 0, 0, 0] -= 1.0
    image = torch.zeros(3, 1, 4, 4)
    image[:, 0, 0, 0] = torch.tensor([-30.0, 0.0, 30.0])  # contact, unsure, magnified
    out = MammoNet(Image(), Patch(), sets=2)(image, patches)
    torch.testing.assert_close(out[:, 0], torch.tensor([5.0, 2.0, -1.0]), atol=1e-4, rtol=0)
    one_set = MammoNet(Image(), Patch())(image, patches)
    torch.testing.assert_close(one_set[:, 0], torch.full((3,), 5.0))
    torch.testing.assert_close(out[:, 1], image[:, 0, 0, 0])  # mag: the image network's
    # with the mirror, mag is the mean of the image's logit and its mirror's (whose first
    # pixel is the image's last of the row); the biopsy blend keeps the plain logit (the
    # unsure image's mirror says magnified, yet its biopsy logit stays the even blend)
    image[:, 0, 0, -1] = torch.tensor([-10.0, 30.0, 30.0])
    mirrored = MammoNet(Image(), Patch(), sets=2, mirror=True)(image, patches)
    torch.testing.assert_close(mirrored[:, 1], torch.tensor([-20.0, 15.0, 30.0]))
    torch.testing.assert_close(mirrored[:, 0], torch.tensor([5.0, 2.0, -1.0]), atol=1e-4, rtol=0)


def test_the_second_look_trains_on_the_wide_set_of_images_labeled_mag() -> None:
    from mammo_dagster.core.model.train import _patch_set

    patches = np.zeros((2, 2 * PATCHES, 1, 2, 2), np.uint8)
    patches[:, PATCHES:] = 7  # the wide set
    chosen = _patch_set(patches, np.array([0.0, 1.0]), sets=2)
    assert chosen.shape == (2, PATCHES, 1, 2, 2)
    assert (chosen[0] == 0).all() and (chosen[1] == 7).all()
    assert _patch_set(patches, np.array([0.0, 1.0]), sets=1) is patches


def test_mean_net_answers_the_mean_of_its_networks_logits() -> None:
    import torch
    from torch import nn

    from mammo_dagster.core.model.network import MammoNet, MeanNet

    class Const(nn.Module):
        def __init__(self, mag: float) -> None:
            super().__init__()
            self.mag = mag

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[0.0, self.mag]]).expand(len(x), 2)

    mean = MeanNet([Const(4.0), Const(-1.0), Const(0.0)])
    torch.testing.assert_close(mean(torch.zeros(2, 1, 4, 4))[:, 1], torch.tensor([1.0, 1.0]))

    class Patch(nn.Module):  # patch logit = the patch's first pixel
        def forward(self, p: torch.Tensor) -> torch.Tensor:
            return p[:, :, 0, 0, 0]

    patches = torch.full((2, 2 * PATCHES, 2, 4, 4), -1.0)  # the wide set: -1
    patches[:, 0, 0, 0, 0] = 5.0  # the contact set's best
    out = MammoNet(mean, Patch(), sets=2)(torch.zeros(2, 1, 4, 4), patches)
    torch.testing.assert_close(out[:, 1], torch.tensor([1.0, 1.0]))  # mag: the mean logit
    blend = 5.0 + torch.sigmoid(torch.tensor(1.0)) * (-1.0 - 5.0)  # leaning on the mean
    torch.testing.assert_close(out[:, 0], blend.expand(2))


def _exported(tmp_path, n: int, **net: object) -> tuple:
    """A seeded two-set network exported to tmp_path/model.onnx at 64 px, and n random
    images and patches for it."""
    import contextlib
    import io

    import torch

    from mammo_dagster.core.model.export import export_onnx
    from mammo_dagster.core.model.network import ExportModel, network

    torch.manual_seed(0)
    shipped = ExportModel.wrap(network(sets=2, **net))
    with contextlib.redirect_stdout(io.StringIO()):
        export_onnx(shipped, tmp_path / "model.onnx", 64)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 64, 64), dtype=np.uint8)
    patches = rng.integers(0, 256, (n, 2 * PATCHES, len(PATCH_CHANNELS), PATCH_PX, PATCH_PX),
                           dtype=np.uint8)  # fmt: skip
    return shipped, images, patches


@pytest.mark.parametrize("mirror,mag_nets", [(False, 1), (True, 1), (False, 2)])
def test_a_two_set_graph_exports_and_onnx_runtime_agrees(
    tmp_path, mirror: bool, mag_nets: int
) -> None:
    import torch

    from mammo_dagster.core.prediction.onnx_model import OnnxModel

    shipped, images, patches = _exported(tmp_path, 3, mirror=mirror, mag_nets=mag_nets)
    x = torch.from_numpy(images[:, None].astype(np.float32) / 255.0)
    with torch.no_grad():
        want = shipped(x, torch.from_numpy(patches.astype(np.float32) / 255.0)).numpy()
    model = OnnxModel(tmp_path / "model.onnx")
    got = model.probs(list(images), list(patches))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_int8_quantizes_the_image_network_and_keeps_the_second_look_in_fp32(tmp_path) -> None:
    """Quantized, a trained patch network's logits moved by up to 0.997 in probability and
    flipped a fifth of a model's validation decisions; its convolutions stay fp32."""
    import onnx
    from torch import nn

    from mammo_dagster.core.model.export import patch_convolutions, quantize_int8
    from mammo_dagster.core.model.network import PatchNet
    from mammo_dagster.core.prediction.onnx_model import OnnxModel

    _, images, patches = _exported(tmp_path, 8, mirror=True)
    quantize_int8(tmp_path / "model.onnx", tmp_path / "model.int8.onnx", images, patches)

    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    kept = patch_convolutions(tmp_path / "model.onnx")
    assert len(kept) == sum(isinstance(m, nn.Conv2d) for m in PatchNet().modules()) == 5
    assert set(kept) < set(convs)

    int8 = onnx.load(str(tmp_path / "model.int8.onnx")).graph
    made_by = {o: n.op_type for n in int8.node for o in n.output}
    convs8 = [n for n in int8.node if n.op_type == "Conv"]
    quantized = {n.name for n in convs8 if made_by.get(n.input[1]) == "DequantizeLinear"}
    assert quantized == set(convs) - set(kept)  # every image-network convolution, no other

    fp32 = OnnxModel(tmp_path / "model.onnx").probs(list(images), list(patches))
    got = OnnxModel(tmp_path / "model.int8.onnx").probs(list(images), list(patches))
    assert got.shape == fp32.shape and np.isfinite(got).all()
