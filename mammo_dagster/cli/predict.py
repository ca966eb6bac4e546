"""`mammo predict`: a DICOM folder to a study CSV with an ONNX model, no Dagster, no torch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.home import ENV_HOME
from .common import CliError, home_of, int_in, progress_bar


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "predict",
        parents=[common],
        help="DICOM folder -> study CSV with the current (or a given) ONNX model",
        description="Score every DICOM frame below --input-dir (any depth, any names) "
        "with ONNX Runtime and write one row per study to --output. No Dagster or torch "
        "needed. Resumable: a rerun continues an interrupted one (--restart starts over). "
        "Files without an image are listed in OUTPUT.errors.csv.",
    )
    p.add_argument("--input-dir", required=True, help="the DICOM folder")
    p.add_argument("--output", required=True, help="the study CSV to write")
    p.add_argument("--model", help="an ONNX file or a model folder (default: the current model)")
    p.add_argument("--home", help=f"data folder with the model store (default ${ENV_HOME})")
    p.add_argument("--fp32", action="store_true", help="use the fp32 model, not int8")
    p.add_argument("--workers", type=int_in(1, 256), default=2, help="decode processes (default 2)")
    p.add_argument("--threads", type=int_in(1, 256), help="ONNX Runtime threads")
    p.add_argument("--restart", action="store_true", help="ignore an earlier run's results")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from ..core.model.modelstore import current_model_file
    from ..core.prediction.predict import predict_folder

    if args.model:
        model = Path(args.model)
        if model.is_dir():
            model = model / ("model.onnx" if args.fp32 else "model.int8.onnx")
            if not model.exists():
                model = model.with_name("model.onnx")
        if not model.is_file():
            raise CliError(f"--model {args.model}: no ONNX model there")
    else:
        home = home_of(args)
        try:
            _current, model = current_model_file(home.models, int8=not args.fp32)
        except FileNotFoundError as e:
            raise CliError(str(e)) from e
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    print(f"model: {model}", file=sys.stderr)
    with progress_bar(None, "predict", args.quiet) as bar:
        report = predict_folder(
            Path(args.input_dir),
            output,
            model,
            workers=args.workers,
            threads=args.threads,
            progress=bar.update,
            restart=args.restart,
        )
    print(
        f"{report.files} files ({report.skipped} done by an earlier run), {report.images} "
        f"images scored, {report.errors} without an image -> {report.studies} studies in "
        f"{report.output}\n  image rows: {report.images_csv}\n  errors: {report.errors_csv}"
    )
    return 0
