"""Grad-CAM for review mode: where a model version looked for a flag in an image, the
`gradcam` asset's overlay when it made one, else made here (torch needed) and kept
beside the asset's."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from mammo_dagster.core.home import Home
from mammo_dagster.core.model.gradcam import cam_file, write_cam
from mammo_dagster.core.model.modelstore import ModelCard, has_card, model_dir

from .catalog import Image

log = logging.getLogger("labeler")


class CamUnavailable(RuntimeError):
    """No Grad-CAM for this image now (no model, or torch is not installed)."""


class Cams:
    """Overlays of one data folder; one network in memory (the last version asked for)
    and one image at a time (2 cores)."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self._network: tuple[str, object, int] | None = None  # (version, network, size)
        self._lock = threading.Lock()

    def overlay(self, image: Image, flag: str, version: str) -> Path:
        """Model `version`'s overlay of `flag` on `image` (ValueError for another flag)."""
        if not has_card(model_dir(self.home.models, version)):
            raise CamUnavailable(f"no model {version}")
        dest = cam_file(self.home, version, image.sop_instance_uid, image.frame, flag)
        if dest.is_file():
            return dest
        with self._lock:
            if dest.is_file():
                return dest
            if self._network is None or self._network[0] != version:
                self._network = (version, *self._load(version))
            _, network, size = self._network
            return write_cam(network, size, image.thumbnail, flag, dest)

    def _load(self, version: str) -> tuple[object, int]:
        folder = model_dir(self.home.models, version)
        try:
            from mammo_dagster.core.model.gradcam import load_torch_model

            size = ModelCard.read(folder).input_size
            return load_torch_model(folder), size
        except ImportError:
            raise CamUnavailable(
                "Grad-CAM needs torch here: pip install 'mammo-dagster[train]'"
            ) from None
        except (OSError, ValueError, KeyError) as e:  # its text may name server paths: logged
            log.warning("Grad-CAM: model %s has no usable network: %s", version, e)
            raise CamUnavailable(
                f"model {version} has no network for Grad-CAM ({type(e).__name__})"
            ) from None
