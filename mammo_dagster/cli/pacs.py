"""`mammo pacs pull|push`: a DICOMweb archive as a drop source, and flags written back."""

from __future__ import annotations

import argparse
import re
import sys

from ..core.home import ENV_HOME
from .common import CliError, home_of, int_in, plural, progress_bar

_DROP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _drop_name(value: str) -> str:
    if not _DROP.match(value):
        raise argparse.ArgumentTypeError(
            f"a drop name is letters, digits, '.', '_' and '-' (a folder name), got {value!r}"
        )
    return value


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from ..core.pacs.source import ENV_CA_BUNDLE, ENV_TOKEN, ENV_URL, ENV_USER, ENV_VERIFY

    p = sub.add_parser(
        "pacs",
        parents=[common],
        help="pull MG studies from a DICOMweb archive; push flags back as DICOM",
        description=f"The DICOMweb source is ${ENV_URL} (or --url), authenticated with "
        f"${ENV_TOKEN} (bearer) or ${ENV_USER}/$MAMMO_DICOMWEB_PASSWORD (basic); TLS is "
        f"verified (${ENV_VERIFY}=false turns it off, ${ENV_CA_BUNDLE} names a CA file).",
    )
    pacs = p.add_subparsers(dest="pacs_command", required=True, metavar="ACTION")
    pull = pacs.add_parser(
        "pull",
        parents=[common],
        help="fetch new MG studies into a drop",
        description="Find MG studies (QIDO-RS) not fetched before and retrieve their "
        "instances (WADO-RS) into a drop folder, pacs-YYYYMMDD-NNN unless --drop names it. "
        "Resumable: a pull that was stopped is continued by the next one. Instances that "
        "cannot be fetched become error rows when the drop is indexed.",
    )
    pull.add_argument("--url", help=f"DICOMweb base URL (default ${ENV_URL})")
    pull.add_argument("--since", help="only studies from this StudyDate on (YYYYMMDD)")
    pull.add_argument("--drop", type=_drop_name, help="the drop to fetch into")
    pull.add_argument("--home", help=f"data folder (default ${ENV_HOME})")
    pull.add_argument(
        "--workers", type=int_in(1, 64), default=4, help="requests in flight (default 4)"
    )
    pull.set_defaults(func=cmd_pull)

    push = pacs.add_parser(
        "push",
        parents=[common],
        help="send Key Object Selection + SR documents for flagged studies",
        description="For each flagged study of the current study predictions whose images "
        "were all classified: a Key Object Selection ('Of Interest') referencing the flagged "
        "images and a Comprehensive SR with every image's probabilities, the thresholds "
        "and the model version, sent with STOW-RS (or written to --dry-run DIR). UIDs are "
        "derived from study + model version: a rerun sends nothing new.",
    )
    push.add_argument("--url", help=f"DICOMweb base URL to STOW to (default ${ENV_URL})")
    push.add_argument("--dry-run", metavar="DIR", help="write the objects to DIR instead")
    push.add_argument("--home", help=f"data folder (default ${ENV_HOME})")
    push.set_defaults(func=cmd_push)


def cmd_pull(args: argparse.Namespace) -> int:
    from ..core.pacs.pull import plan_pull, pull
    from ..core.pacs.source import PacsError, PacsSource, redact
    from ..core.store.db import Store

    home = home_of(args)
    try:
        source = PacsSource.from_env(args.url)
        store = Store(home.db)
        store.migrate()
        plan = plan_pull(source, store, args.since)
        with progress_bar(plan.instances, "pull", args.quiet) as bar:
            report = pull(
                home, source, drop=args.drop, workers=args.workers, store=store,
                progress=bar.update, plan=plan,
            )  # fmt: skip
    except PacsError as e:
        raise CliError(str(e)) from e
    if report.drop is None:
        print(f"0 studies, 0 instances fetched: nothing new on {redact(source.url)}")
        return 0
    mb = report.bytes / 2**20
    print(
        f"{plural(report.studies, 'study')}, {plural(report.instances, 'instance')} fetched "
        f"into drop {report.drop} ({mb:.1f} MB in {report.seconds:.1f} s"
        f"{', resumed' if report.resumed else ''}); {report.failed} failed"
    )
    print(f"  folder: {home.drop(report.drop)}", file=sys.stderr)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..core.pacs.push import push
    from ..core.pacs.source import PacsError, PacsSource

    home = home_of(args)
    try:
        if args.dry_run:
            report = push(home, folder=Path(args.dry_run))
        else:
            report = push(home, source=PacsSource.from_env(args.url))
    except PacsError as e:
        raise CliError(str(e)) from e
    verb = "written to" if args.dry_run else "sent to"
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items())) or "none"
    print(
        f"{plural(report.sent, 'study')} ({plural(report.objects, 'document')}) {verb} "
        f"{report.destination} for model {report.model_version}; skipped: {skipped}; "
        f"{report.failed} failed"
    )
    for line in report.errors:
        print(f"  {line}", file=sys.stderr)
    return 1 if report.failed else 0
