"""Global options (``--store``, ``-v``, ``--debug``, ``--no-verify``) work before and after the
subcommand, at any depth (``mmiris artifacts ls --store X``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmiris.cli import build_parser, main
from tests.test_store import _interactions

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "argv",
    [
        ["--store", "S", "-v", "--debug", "--no-verify", "artifacts", "ls"],
        ["artifacts", "ls", "--store", "S", "-v", "--debug", "--no-verify"],
        ["artifacts", "--store", "S", "--debug", "ls", "-v", "--no-verify"],
        ["--store", "elsewhere", "artifacts", "ls", "--store=S", "--verbose", "--debug", "--no-verify"],
    ],
)
def test_global_options_in_any_position(argv):
    args = build_parser().parse_args(argv)
    assert (args.store, args.verbose, args.debug, args.no_verify) == ("S", True, True, True)


def test_defaults_when_not_given_and_not_reset_by_a_subcommand():
    args = build_parser().parse_args(["artifacts", "ls"])
    assert (args.store, args.verbose, args.debug, args.no_verify) == (None, False, False, False)
    args = build_parser().parse_args(["--store", "S", "ingest", "ncf", "folder"])
    assert args.store == "S"


def test_artifacts_ls_with_store_after_the_subcommand(store, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("MMIRIS_STORE", raising=False)
    monkeypatch.chdir(tmp_path)  # the default ./mmiris-store would be created here
    ref = store.publish("interactions", "interactions", _interactions())
    assert main(["artifacts", "ls", "--store", store.root]) == 0
    assert str(ref) in capsys.readouterr().out
    assert main(["artifacts", "show", "interactions", "--store", store.root]) == 0
    assert ref.version in capsys.readouterr().out
    assert not (tmp_path / "mmiris-store").exists()
    os.environ.pop("MMIRIS_STORE", None)  # main exported it for the stages it calls


def test_console_script_takes_store_after_the_subcommand(store):
    ref = store.publish("interactions", "interactions", _interactions())
    res = subprocess.run(
        [str(Path(sys.executable).parent / "mmiris"), "artifacts", "ls", "--store", store.root],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    assert str(ref) in res.stdout
