"""`mammo label` (the labeling app) and `mammo labels` (import or export labels as CSV)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.home import ENV_HOME
from .common import CliError, home_of


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "label",
        parents=[common],
        help="start the labeler (keyboard labeling app) on 127.0.0.1:5001",
        description="Start the labeling app on the data folder. Keys: 1 biopsy tool/marker, "
        "2 mag view, 3 neither, 4 both, s skip, u undo. Review mode (/review): y the model "
        "is right, n then 1-4 it is wrong, g Grad-CAM.",
    )
    from labeler.cli import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_label)


def add_labels_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "labels",
        parents=[common],
        help="import or export labels as CSV",
        description="CSV columns: sop_instance_uid,has_biopsy_tool,has_mag_view,annotator "
        "(then frame,source,model_version,labeled_at). Works while the labeler runs.",
    )
    p.add_argument("action", choices=["import", "export"])
    p.add_argument("file", help="the CSV to read (import) or write (export)")
    p.add_argument("--home", help=f"data folder (default ${ENV_HOME} or ./data)")
    p.add_argument(
        "--annotator", default="import", help="import: for rows without one (default import)"
    )
    p.add_argument(
        "--history", action="store_true", help="export: every event (labels, skips, undos)"
    )
    p.set_defaults(func=cmd_labels)


def cmd_label(args: argparse.Namespace) -> int:
    from labeler.cli import run

    return run(args)


def cmd_labels(args: argparse.Namespace) -> int:
    from ..core.store.db import Store
    from ..core.store.labels import LabelFileError, export_csv, import_csv

    store = Store(home_of(args).db)
    store.migrate()
    path = Path(args.file)
    if args.action == "export":
        n = export_csv(store, path, history=args.history)
        what = "events" if args.history else "labeled images"
        print(f"wrote {n} {what} to {path}")
        return 0
    try:
        report = import_csv(store, path, default_annotator=args.annotator)
    except LabelFileError as e:
        raise CliError(f"{e} (nothing imported)") from e
    print(
        f"{report.rows} rows: {report.added} labels added, {report.unchanged} already so"
        + (f", {report.not_indexed} for images not indexed yet" if report.not_indexed else "")
    )
    return 0
