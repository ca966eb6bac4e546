"""The model store: one owner of the card (ModelCard) and of which version is the newest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mammo_dagster.core.model.modelstore import (
    CARD,
    ModelCard,
    has_card,
    newest_trained,
    next_version,
    versions,
)


def test_card_round_trip_keeps_the_report(tmp_path: Path) -> None:
    written = {"input_size": 128, "thresholds": {"biopsy": 0.25, "mag": 0.5}, "label_seq": 7,
               "label_count": 5, "version": "m0003", "preprocessing": {"render": "4"},
               "history": [{"epoch": 0}], "holdout": {"biopsy": {"auc": 0.9}}}  # fmt: skip
    (tmp_path / CARD).write_text(json.dumps(written))
    card = ModelCard.read(tmp_path)
    assert (card.input_size, card.label_seq, card.label_count) == (128, 7, 5)
    assert card.thresholds == {"biopsy": 0.25, "mag": 0.5} and card.version == "m0003"
    assert card.preprocessing == {"render": "4"} and card.report["history"] == [{"epoch": 0}]
    assert card.to_dict() == written
    card.version = "m0004"
    card.write(tmp_path)
    assert ModelCard.read(tmp_path).to_dict() == written | {"version": "m0004"}
    assert [p.name for p in tmp_path.iterdir()] == [CARD]  # written atomically, no temp left


def test_a_card_without_an_input_size_is_refused(tmp_path: Path) -> None:
    (tmp_path / CARD).write_text(json.dumps({"thresholds": {}}))
    with pytest.raises(KeyError):
        ModelCard.read(tmp_path)
    with pytest.raises(OSError):
        ModelCard.read(tmp_path / "nowhere")


def test_versions_newest_and_next(tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert versions(models) == [] and newest_trained(models) is None
    for v in ("m0002", "m9999", "m10000", "m0001"):
        (models / v).mkdir(parents=True)
        ModelCard(64, {}).write(models / v)
    (models / "m10001").mkdir()  # training died: no card
    (models / "m42").mkdir()  # not a version name
    (models / "current.json").write_text("{}")
    assert versions(models) == ["m0001", "m0002", "m9999", "m10000", "m10001"]
    assert newest_trained(models) == "m10000"  # numerically, and only finished ones
    assert not has_card(models / "m10001")
    assert next_version(models) == "m10002" and (models / "m10002").is_dir()


def test_training_config_is_the_core_train_config() -> None:
    """trained_model's run config is built from the core's TrainConfig: every run option,
    its default and its help (metal_channel is `metal`; pretrained auto | yes | no is
    None | True | False), and nothing else."""
    from mammo_dagster.core.model.config import TrainConfig, run_options
    from mammo_dagster.defs.model import CORE_NAMES, TrainingConfig

    core = {f.name: f for f in run_options()}
    fields = TrainingConfig.model_fields
    assert sorted(CORE_NAMES.get(n, n) for n in fields) == sorted(core)
    assert {"size", "epochs", "seed", "metal_channel", "pretrained"} <= set(fields)
    for name, f in fields.items():
        option = core[CORE_NAMES.get(name, name)]
        assert option.metadata["help"] in f.description, name
        if name != "pretrained":
            assert f.default == option.default, name
    assert TrainingConfig().to_core() == TrainConfig()
    assert TrainingConfig(pretrained="no", metal_channel=False, epochs=3).to_core() == (
        TrainConfig(pretrained=False, metal=False, epochs=3)
    )
