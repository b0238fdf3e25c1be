"""The ``mmiris`` command. Each subcommand lives in its own module with ``register(sub)``.

A module's ``register`` adds its parser and sets ``func`` (called with the parsed args).
Errors a user can fix (MmirisError) print one clear line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from mmiris.errors import MmirisError

# Order is the order shown in --help.
COMMANDS = ["demo", "ingest", "split", "crawl", "features", "train", "tune", "evaluate", "recommend",
            "report", "artifacts"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmiris",
        description="Multimodal IRIS recommender: stages over a versioned Parquet artifact store.",
    )
    parser.add_argument("--store", default=None,
                        help="artifact store path or URI (default: $MMIRIS_STORE or ./mmiris-store)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mmiris.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.command is None:
        parser.print_help()
        return 2
    if args.store:
        os.environ["MMIRIS_STORE"] = args.store
    try:
        return int(args.func(args) or 0)
    except MmirisError as exc:
        print(f"mmiris {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
