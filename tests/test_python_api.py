"""The Python API: docs/python-api.md's example runs as written, and ``import mmiris`` is cheap."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import mmiris

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/python-api.md should hold one python example"
    return blocks[0]


@pytest.mark.slow
def test_the_documented_example_runs_verbatim_on_the_demo_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MMIRIS_STORE", raising=False)
    scope: dict = {}
    exec(compile(_example(), str(DOC), "exec"), scope)
    table = scope["table"]
    assert list(table.index) == ["itempop", "fism", "multimodal_iris"]
    assert table["hr10"].between(0, 1).all() and table["hr10_full"].between(0, 1).all()
    assert set(table.attrs["models"]) == {"itempop", "fism", "multimodal_iris"}
    assert scope["report"].exists() and (tmp_path / "mmiris-store").is_dir()
    out = capsys.readouterr().out
    assert "hr10" in out and "ndcg10_full" in out
    # a second run finds every artifact
    store = scope["store"]
    again = mmiris.compare(
        scope["split"],
        models=["itempop"],
        store=store,
        train_config={"epochs": 2, "batch_size": 256, "lr": 0.01},
    )
    assert again.attrs["models"]["itempop"] == table.attrs["models"]["itempop"]


def test_the_public_names_resolve_and_import_mmiris_stays_cheap():
    for name in mmiris.__all__:
        assert getattr(mmiris, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        _ = mmiris.nosuch
    code = "import sys, mmiris; print(sorted(m for m in ('torch', 'pandas', 'pyarrow', 'prefect') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def test_api_names_survive_importing_the_subpackages():
    """An API function must not share its name with a subpackage of mmiris: importing the
    subpackage rebinds the attribute (``mmiris.recommend`` would become a module)."""
    import importlib
    import pkgutil

    import mmiris

    subpackages = {m.name for m in pkgutil.iter_modules(mmiris.__path__)}
    assert not subpackages & set(mmiris._API), subpackages & set(mmiris._API)
    importlib.import_module("mmiris.recommend.topn")
    assert callable(mmiris.recommend_items)
