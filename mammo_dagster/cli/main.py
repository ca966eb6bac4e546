"""The parser (each command adds its own) and the entry point."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from . import demo, dev, inspect, label, pacs, predict, synth, thumbnails, weights
from .common import CliError

#: Each command's parser, in the order `mammo --help` lists them.
COMMANDS = (
    synth.add_parser,
    inspect.add_parser,
    thumbnails.add_parser,  # thumbnail, thumbnails
    demo.add_parser,
    label.add_parser,
    predict.add_parser,
    dev.add_parser,
    label.add_labels_parser,
    weights.add_parser,
    pacs.add_parser,  # pacs pull, pacs push
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammo",
        description="Flag biopsy tools/markers and magnification views in mammography DICOMs.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="let the codecs' own log through and show tracebacks (for bug reports)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)  # -q after the command works too
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars"
    )
    for add in COMMANDS:
        add(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: errors are one line on stderr and a non-zero exit, no traceback
    (``--debug`` shows them, and the codecs' log)."""
    from ..core.imaging.dicom import DicomError
    from ..core.imaging.guard import ENV_DEBUG, quiet_codecs

    args = build_parser().parse_args(argv)
    if args.debug:
        os.environ[ENV_DEBUG] = "1"  # worker processes inherit it
    else:
        warnings.filterwarnings("ignore", module="pydicom")
        warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecations
    logging.basicConfig(level=logging.WARNING, format="mammo: %(message)s", stream=sys.stderr)
    quiet_codecs()  # pydicom's log becomes the files' warnings, not stderr noise
    try:
        return args.func(args)
    except DicomError as e:
        print(f"mammo {args.command}: {args_target(args)}: {e}", file=sys.stderr)
    except (CliError, OSError, ValueError) as e:
        print(f"mammo {args.command}: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"mammo {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line, and say where to look
        if args.debug:
            traceback.print_exc()
        print(
            f"mammo {args.command}: internal error {type(e).__name__}: {e} (please report it)",
            file=sys.stderr,
        )
    return 1


def args_target(args: argparse.Namespace) -> str:
    return str(getattr(args, "file", None) or getattr(args, "folder", None) or "")
