"""Run an exported model with ONNX Runtime on the CPU (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..imaging import preprocess


class OnnxModel:
    """An ONNX model file with the model card beside it (thresholds, input size)."""

    def __init__(self, path: Path, threads: int | None = None, spin: bool = True) -> None:
        """`spin=False` stops ONNX Runtime's threads from busy-waiting between batches,
        which steals the cores from decoding workers running beside it."""
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        card = self.path.parent / "card.json"
        self.card = json.loads(card.read_text()) if card.exists() else {}
        shape = self.session.get_inputs()[0].shape
        self.size = int(self.card.get("input_size") or shape[-1])
        self.thresholds = self.card.get("thresholds") or {f: 0.5 for f in preprocess.FLAGS}
        self.version = self.card.get("version") or self.path.parent.name
        names = [i.name for i in self.session.get_inputs()]
        self.input_name = names[0]
        #: whether the graph takes the thumbnails' patches too (rendering contract v3)
        self.second_look = preprocess.CONTRACT["patches_name"] in names
        #: the thumbnail rendering contract the model was trained on (None: no card)
        self.render = preprocess.model_render(self.card)

    def probs(
        self,
        images: list[np.ndarray] | np.ndarray,
        patches: list[np.ndarray] | np.ndarray | None = None,
        batch: int = 32,
    ) -> np.ndarray:
        """uint8 [size, size] model inputs (and, for a second-look model, their uint8
        patches) -> float32 [n, 2] probabilities."""
        if self.second_look and patches is None:
            raise ValueError(f"model {self.version} needs the thumbnails' patches too")
        out = []
        for i in range(0, len(images), batch):
            feeds = {self.input_name: preprocess.to_batch(list(images[i : i + batch]))}
            if self.second_look:
                feeds[preprocess.CONTRACT["patches_name"]] = preprocess.to_patch_batch(
                    list(patches[i : i + batch])  # type: ignore[index]
                )
            out.append(self.session.run(None, feeds)[0])
        return np.concatenate(out) if out else np.zeros((0, 2), np.float32)

    def load(self, png: Path) -> tuple[np.ndarray, np.ndarray | None]:
        """One thumbnail's model input (and patches, when the model takes them);
        RenderMismatch for another rendering version than the model's, ValueError for a
        thumbnail without the patches this model needs."""
        image, patches = preprocess.load_input(png, self.size, self.render)
        if self.second_look and patches is None:
            raise ValueError(f"{Path(png).name} carries no patches: re-run its thumbnails")
        return image, patches

    def thumbnail_probs(self, pngs: list[Path], batch: int = 32, chunk: int = 256) -> np.ndarray:
        """Thumbnail PNGs -> float32 [n, 2] probabilities, `chunk` images in memory at once
        (RenderMismatch for a thumbnail of another rendering version than the model's)."""
        out = []
        for i in range(0, len(pngs), chunk):
            loaded = [self.load(p) for p in pngs[i : i + chunk]]
            patches = [p for _, p in loaded] if self.second_look else None
            out.append(self.probs([im for im, _ in loaded], patches, batch=batch))
        return np.concatenate(out) if out else np.zeros((0, 2), np.float32)

    def flags(self, probs: np.ndarray) -> np.ndarray:
        t = np.array([self.thresholds[f] for f in preprocess.FLAGS], np.float32)
        return probs >= t
