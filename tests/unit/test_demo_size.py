"""The demo's size: quick by default, larger with --full, an explicit option winning."""

from __future__ import annotations

import argparse

from mammo_dagster.cli.demo import FULL, QUICK, add_parser, resolve_size


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(), argparse.ArgumentParser(add_help=False))
    return resolve_size(parser.parse_args(["demo", *argv]))


def test_the_default_demo_is_the_quick_one_and_full_the_larger() -> None:
    quick, full = _parse(), _parse("--full")
    assert {k: getattr(quick, k) for k in QUICK} == QUICK
    assert {k: getattr(full, k) for k in FULL} == FULL
    assert QUICK["studies"] < FULL["studies"] and QUICK["labels"] < FULL["labels"]


def test_an_explicit_option_wins_over_either_size() -> None:
    args = _parse("--full", "--studies", "7", "--epochs", "2")
    assert (args.studies, args.epochs, args.labels) == (7, 2, FULL["labels"])
    assert _parse("--labels", "0").labels == 0  # 0 is given, not "unset"
