"""Grad-CAM overlays: heat on a thumbnail's black padding is masked (issue 19)."""

import numpy as np
import pytest

pytest.importorskip("torch")  # core.model.gradcam is the `train` extra's


def test_padding_gets_no_heat_and_the_rest_is_rescaled() -> None:
    from mammo_dagster.core.model.gradcam import mask_padding, overlay

    image = np.zeros((64, 64), np.uint8)
    image[:, 16:48] = 90  # a padded square: the content in the middle columns
    image[10:20, 20:30] = 0  # air inside the content is not padding
    cam = np.zeros((32, 32), np.float32)  # a model-input-sized map, stretched over it
    cam[:, :4] = 1.0  # the strongest heat on the left padding
    cam[16, 16] = 0.5  # weaker heat on the breast
    masked = mask_padding(cam, image)
    assert masked.shape == image.shape
    assert masked[:, :16].max() == 0.0 and masked[:, 48:].max() == 0.0
    assert masked[:, 16:48].max() == pytest.approx(1.0)  # rescaled over the content
    assert masked[30:34, 30:34].max() > 0.5
    assert mask_padding(cam, np.zeros((64, 64), np.uint8)).max() == 0.0  # an all-black one
    rgb = np.asarray(overlay(image, masked))
    assert rgb.shape == (64, 64, 3) and (rgb[:, :16] == 0).all()  # padding stays black


def test_a_model_trained_before_the_lift_floor_loads_as_it_was(tmp_path) -> None:
    import torch

    from mammo_dagster.core.model.gradcam import load_torch_model
    from mammo_dagster.core.model.network import network

    net = network()
    state = {k: v for k, v in net.state_dict().items() if k != "patch_net.lift_floor"}
    torch.save(state, tmp_path / "model.pt")
    loaded = load_torch_model(tmp_path)
    assert float(loaded.body.patch_net.lift_floor) == 0.0
    torch.save(net.state_dict(), tmp_path / "model.pt")
    assert float(load_torch_model(tmp_path).body.patch_net.lift_floor) > 0.0


def test_a_v5_model_loads_with_both_patch_sets(tmp_path) -> None:
    import json

    import torch

    from mammo_dagster.core.imaging.thumbnails import MAG_RENDER
    from mammo_dagster.core.model.gradcam import load_torch_model
    from mammo_dagster.core.model.network import network

    net = network(sets=2)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    card = {"input_size": 64, "preprocessing": {"render": MAG_RENDER}}
    (tmp_path / "card.json").write_text(json.dumps(card))
    loaded = load_torch_model(tmp_path).body
    assert loaded.sets == 2
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    (tmp_path / "card.json").unlink()  # no card: one set, as every model before v5
    assert load_torch_model(tmp_path).body.sets == 1


def test_a_v5_biopsy_map_follows_the_set_its_flag_leans_on() -> None:
    """A contact view's map shows the contact-size patches' scores, a mag view's the
    wide set's, as `MammoNet` blends them by the mag probability."""
    import torch

    from mammo_dagster.core.imaging.lift import PATCH_CHANNELS, PATCH_PX, PATCHES
    from mammo_dagster.core.model.gradcam import spot_map
    from mammo_dagster.core.model.network import ExportModel, network

    torch.manual_seed(0)
    shipped = ExportModel.wrap(network(sets=2))
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (2 * PATCHES, len(PATCH_CHANNELS), PATCH_PX, PATCH_PX),
                           dtype=np.uint8)  # fmt: skip
    contact_spots = [(20.0 + 25 * i, 30.0, 1.0) for i in range(PATCHES)]
    wide_spots = [(20.0 + 25 * i, 200.0, 1.0) for i in range(PATCHES)]  # far to the right
    spots = contact_spots + wide_spots
    contact = spot_map(shipped, patches, spots, (256, 256), mag=0.0)
    wide = spot_map(shipped, patches, spots, (256, 256), mag=1.0)
    assert contact[:, :60].max() > 0 and contact[:, 170:].max() < 1e-3 * contact.max()
    assert wide[:, 170:].max() > 0 and wide[:, :60].max() < 1e-3 * wide.max()
    one_set = ExportModel.wrap(network(sets=1))  # v4: every spot counts, whatever the mag
    both = spot_map(one_set, patches[:PATCHES], contact_spots, (256, 256), mag=1.0)
    assert both[:, :60].max() > 0
