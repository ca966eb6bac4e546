"""The ``mammo`` command line: one module per command (synth, inspect, thumbnails,
demo, label/labels, predict, dev, weights, pacs), what they share in `common`, the
parser and the entry point in `main` (the console script ``mammo = "mammo_dagster.cli:main"``)."""

from .demo_report import flag_summary as _flag_summary
from .demo_report import print_loop as _print_loop
from .demo_report import score as _score
from .main import build_parser, main

__all__ = ["_flag_summary", "_print_loop", "_score", "build_parser", "main"]
