"""The ``mmiris`` command. Each subcommand lives in its own module with ``register(sub)``.

A module's ``register`` adds its parser and sets ``func`` (called with the parsed args).
``main`` is the one error boundary: a problem the user can fix prints one line and exits 2,
a bug keeps its traceback and exits 1 (``--debug`` shows the traceback for both).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

import pyarrow as pa

from mmiris.errors import MmirisError

EXIT_CODES = """exit codes:
  0    done
  1    internal error (a bug): the traceback is printed; please report it
  2    a problem to fix: bad input, option, file or artifact (one line names it); also usage errors
  3    crawl only: stopped but resumable (quota, request limit); run the same command again
  130  interrupted (Ctrl-C)
  141  output closed early (e.g. piped into head); nothing is wrong"""

# Order is the order shown in --help.
COMMANDS = [
    "demo",
    "ingest",
    "split",
    "crawl",
    "features",
    "train",
    "tune",
    "evaluate",
    "recommend",
    "report",
    "artifacts",
]


def _global_options(parser: argparse.ArgumentParser, default) -> None:
    """The options every command takes, anywhere on the line (``mmiris train ... --store X``).

    The top-level parser gets real defaults; each subcommand gets the same options with
    ``argparse.SUPPRESS``, so a value given after the subcommand is kept and an absent one
    does not overwrite what was given before it."""

    def d(value):
        return value if default is None else default

    parser.add_argument(
        "--store", default=d(None), help="artifact store path or URI (default: $MMIRIS_STORE or ./mmiris-store)"
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        default=d(False),
        help="skip the sha256 check of tables and files against their manifests "
        "(also MMIRIS_VERIFY=0); faster on huge stores, unsafe on untrusted ones",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=d(False),
        help="print the full traceback of any error, not just the one-line message",
    )
    parser.add_argument("-v", "--verbose", action="store_true", default=d(False), help="debug logging")


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield sub
                yield from _subparsers(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmiris",
        description="Multimodal IRIS recommender: stages over a versioned Parquet artifact store.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mmiris.cli.{name}").register(sub)
    for p in _subparsers(parser):
        _global_options(p, argparse.SUPPRESS)
    return parser


def user_error(exc: BaseException) -> str | None:
    """The one-line message of an error the user can cause and fix, or None for a bug."""
    if isinstance(exc, MmirisError):
        return str(exc)
    if isinstance(exc, OSError):  # disk full, read-only store, permissions, missing files
        what = exc.strerror or str(exc) or type(exc).__name__
        names = [n for n in (exc.filename, getattr(exc, "filename2", None)) if n]
        return f"{' -> '.join(map(str, names))}: {what}" if names else what
    if isinstance(exc, (pa.ArrowInvalid, pa.ArrowIOError)):  # unreadable Parquet/CSV the user gave
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


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
    if not args.verbose:  # Dask's INFO lines (cluster start-up, dashboard advice) drown the stage's own
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # read at import, also by workers
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if args.store:
        os.environ["MMIRIS_STORE"] = args.store
    if args.no_verify:
        os.environ["MMIRIS_VERIFY"] = "0"
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly; point stdout at devnull so the
        # interpreter's final flush does not raise again.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except KeyboardInterrupt:
        print(f"mmiris {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the boundary: classify, then report once
        message = user_error(exc)
        if message is None or args.debug:
            traceback.print_exc()
        if message is None:
            print(
                f"mmiris {args.command}: internal error ({type(exc).__name__}); the traceback above "
                f"shows where — please report it",
                file=sys.stderr,
            )
            return 1
        print(f"mmiris {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
