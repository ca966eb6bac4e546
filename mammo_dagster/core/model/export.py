"""Export a trained network to ONNX and quantize it to int8 (the `train` extra).

The graph's inputs are named by the input contract (`preprocess.CONTRACT`): ``image``
[N, 1, S, S] and, for rendering contract v3 models, ``patches`` [N, K, C, P, P], both
with a dynamic batch axis; its output ``probs`` [N, 2].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..imaging import preprocess
from ..imaging.lift import PATCH_CHANNELS, PATCH_PX, PATCHES


def export_onnx(model, path: Path, size: int) -> Path:
    """ONNX of a `network.Shipped` graph (one input, or two with its second look)."""
    import torch

    batch = torch.export.Dim("N", min=1, max=4096)
    image = torch.zeros(2, 1, size, size)
    names = [preprocess.CONTRACT["input_name"]]
    args: tuple = (image,)
    shapes: dict = {"image": {0: batch}}
    if model.second_look:
        names.append(preprocess.CONTRACT["patches_name"])
        k = PATCHES * model.body.sets
        args += (torch.zeros(2, k, len(PATCH_CHANNELS), PATCH_PX, PATCH_PX),)
        shapes["patches"] = {0: batch}
    torch.onnx.export(
        model,
        args,
        str(path),
        input_names=names,
        output_names=[preprocess.CONTRACT["output_name"]],
        dynamic_shapes=shapes,
        external_data=False,
        dynamo=True,
    )
    return path


def quantize_int8(
    fp32: Path,
    int8: Path,
    calibration: np.ndarray,
    patches: np.ndarray | None = None,
    per_channel: bool = True,
    patch_int8: bool = False,
) -> Path:
    """Static QDQ int8 quantization, calibrated on `calibration` (uint8 [n,S,S] inputs)
    and, for a two-input graph, their `patches` (uint8 [n,K,C,P,P]). Only the image
    network's convolutions: the second look's stay fp32 (`patch_convolutions`) unless
    `patch_int8` (as until 2026-12-08; `benchmarks/bench_inference.py` compares)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    def feeds(i: int) -> dict:
        out = {
            preprocess.CONTRACT["input_name"]: preprocess.to_batch(list(calibration[i : i + 16]))
        }
        if patches is not None:
            out[preprocess.CONTRACT["patches_name"]] = preprocess.to_patch_batch(
                list(patches[i : i + 16])
            )
        return out

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([feeds(i) for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.batches, None)

    pre = int8.with_name(int8.stem + ".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # fails on fastai Concat
    keep = patch_convolutions(pre) if patches is not None and not patch_int8 else []
    quantize_static(
        str(pre),
        str(int8),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        op_types_to_quantize=["Conv"],  # the backbones; the small heads stay fp32
        nodes_to_exclude=keep,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    pre.unlink(missing_ok=True)
    return int8


def patch_convolutions(path: Path) -> list[str]:
    """The names of the Conv nodes an ONNX graph runs on its patches input (the second
    look's network). In int8 its patch logits moved by up to 0.997 in probability:
    quantized, one model flagged 20 of its 132 validation images that fp32 scored at
    0.0003-0.66 (threshold 0.906), so `int8_agrees_with_fp32` discarded the int8 graph
    and predictions ran in fp32. Kept in fp32 the graph runs as fast within noise
    (`benchmarks/bench_inference.py`: 108 against 105 img/s on an AVX2 CPU)."""
    import onnx

    graph = onnx.load(str(path)).graph
    reached, names = {preprocess.CONTRACT["patches_name"]}, []
    for node in graph.node:  # an ONNX graph lists its nodes in topological order
        if any(name in reached for name in node.input):
            reached.update(node.output)
            if node.op_type == "Conv":
                names.append(node.name)
    return names
