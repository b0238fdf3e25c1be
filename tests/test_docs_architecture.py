"""docs/architecture.md's table of the modules each stage hashes into its versions is the
code's: the ``CODE`` tuples beside the stages, every one of them, name for name."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import mmiris.pipelines

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

# table row -> where its modules are named in the code
ROWS = {
    "ingest": ("mmiris.pipelines.ingest", "CODE"),
    "split": ("mmiris.pipelines.split", "CODE"),
    "crawl": ("mmiris.pipelines.crawl", "CODE"),
    "features": ("mmiris.pipelines.extract", "CODE"),
    "folder / JSON-lines inputs": ("mmiris.ingest.folders", "CODE"),
    "train": ("mmiris.pipelines.train", "TRAIN_CODE"),
    "tune": ("mmiris.pipelines.tune", "TUNE_CODE"),
    "evaluate": ("mmiris.pipelines.evaluate", "CODE"),
    "recommend": ("mmiris.pipelines.recommend", "CODE"),
    "demo data": ("mmiris.pipelines.demo_data", "CODE"),
}


def _table() -> dict[str, set[str]]:
    text = DOC.read_text()
    start = text.index("| stage | modules hashed")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        stage, modules = (cell.strip() for cell in line.strip("|").split("|"))
        rows[stage] = set(re.findall(r"`(mmiris[\w.]*)`", modules))
    return rows


def test_the_table_names_exactly_the_modules_each_stage_hashes():
    table = _table()
    assert set(table) == set(ROWS)
    for stage, (module, attr) in ROWS.items():
        assert table[stage] == set(getattr(importlib.import_module(module), attr)), stage


def test_every_stage_that_hashes_code_has_a_row():
    named = {module for module, _ in ROWS.values()}
    for info in pkgutil.iter_modules(mmiris.pipelines.__path__, "mmiris.pipelines."):
        module = importlib.import_module(info.name)
        if any(hasattr(module, attr) for attr in ("CODE", "TRAIN_CODE", "TUNE_CODE")):
            assert info.name in named, f"{info.name} hashes code but has no row in {DOC.name}"
