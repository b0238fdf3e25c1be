"""An artifact's identity follows what decides its content: inputs by content, parameters, and
the source of the code that computed it (docs/architecture.md "Artifact identity").

Source edits are simulated by replacing ``code_version.read_source`` for one file: the real
tree is never touched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image
from test_train_trainer import publish_tiny_split  # the module pytest loads (it registers tiny_mf)

from mmiris.artifacts import code_version
from mmiris.artifacts.code_version import referenced_modules, source_version
from mmiris.models import get_model_class
from mmiris.pipelines.extract import images_from_folder, texts_from_jsonl
from mmiris.pipelines.train import model_code_version, train_model
from mmiris.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CLI = "import sys; from mmiris.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture()
def edited(monkeypatch):
    """``edited("itempop.py")``: from now on that file reads as if a line had been added."""
    names: set[str] = set()
    real = code_version.read_source

    def read(path: Path) -> bytes:
        data = real(path)
        return data + b"\n# edited\n" if path.name in names else data

    monkeypatch.setattr(code_version, "read_source", read)

    def edit(name: str) -> None:
        names.add(name)
        code_version.clear_cache()

    yield edit
    code_version.clear_cache()


def _posters(folder: Path, n: int = 3) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 12), (40 * i, 10, 200)).save(folder / f"{i + 1}.png")


def test_editing_one_poster_gives_a_new_image_artifact_version(store, tmp_path):
    _posters(tmp_path / "posters")
    first = images_from_folder(store, tmp_path / "posters")
    assert images_from_folder(store, tmp_path / "posters") == first  # unchanged folder: found
    Image.new("RGB", (8, 12), (0, 255, 0)).save(tmp_path / "posters" / "2.png")  # same name, size, count
    second = images_from_folder(store, tmp_path / "posters")
    assert second.version != first.version
    assert store.manifest(second).params["files"] == store.manifest(first).params["files"] == 3
    # the id map is part of the key too
    mapped = images_from_folder(store, tmp_path / "posters", id_map={"1": 1, "2": 2, "3": 30})
    assert mapped.version not in {first.version, second.version}


def test_editing_one_plot_gives_a_new_text_artifact_version(store, tmp_path):
    path = tmp_path / "plots.jsonl"
    rows = [{"movie_id": i, "Plot": f"plot {i}"} for i in range(1, 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = texts_from_jsonl(store, path)
    assert texts_from_jsonl(store, path) == first
    rows[1]["Plot"] = "plot 2, revised"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert texts_from_jsonl(store, path).version != first.version


def test_model_code_version_covers_the_model_its_bases_and_the_attention_path():
    nais = referenced_modules(get_model_class("nais_prod"), "mmiris.models")
    assert {
        "mmiris.models.nais",
        "mmiris.models.item_similarity",
        "mmiris.models.base",
        "mmiris.models.attentive",
        "mmiris.models.kernels",
        "mmiris.models.layers",
    } <= nais
    assert "mmiris.models.vbpr" not in nais and "mmiris.models.iris" not in nais
    hybrid = referenced_modules(get_model_class("hybrid_iris"), "mmiris.models")
    assert "mmiris.models.iris" in hybrid  # used by composition, not inheritance
    itempop = referenced_modules(get_model_class("itempop"), "mmiris.models")
    assert "mmiris.models.attentive" not in itempop
    # the kernel's C source is hashed with the package
    files = [rel for rel, _ in code_version._source_files("mmiris.models.kernels")]
    assert any(rel.endswith(".c") for rel in files)


def test_kernel_source_edit_changes_attentive_models_only(edited):
    before = {m: model_code_version(get_model_class(m)) for m in ("nais_prod", "multimodal_iris", "itempop")}
    edited("attentive_sum.c")
    after = {m: model_code_version(get_model_class(m)) for m in before}
    assert after["nais_prod"] != before["nais_prod"]
    assert after["multimodal_iris"] != before["multimodal_iris"]
    assert after["itempop"] == before["itempop"]


def test_editing_a_model_retrains_it_and_unrelated_edits_do_not(store, edited):
    split = publish_tiny_split(store)
    cfg = TrainConfig(epochs=1, seed=0)
    first = train_model(store, split, "itempop", train_config=cfg)
    edited("vbpr.py")  # another model
    edited("metrics.py")  # evaluation code: decides metrics, not the model
    assert train_model(store, split, "itempop", train_config=cfg) == first
    edited("itempop.py")
    second = train_model(store, split, "itempop", train_config=cfg)
    assert second.name == first.name and second.version != first.version
    assert store.manifest(second).code_version != store.manifest(first).code_version
    assert train_model(store, split, "itempop", train_config=cfg) == second  # and now it is found


def test_stage_code_versions_follow_their_own_modules(edited):
    from mmiris.pipelines import evaluate, extract, recommend

    before = [source_version(*evaluate.CODE), source_version(*extract.CODE), source_version(*recommend.CODE)]
    edited("metrics.py")  # mmiris/eval/metrics.py
    after = [source_version(*evaluate.CODE), source_version(*extract.CODE), source_version(*recommend.CODE)]
    assert after[0] != before[0]
    assert after[1] == before[1]  # features do not depend on the metrics
    edited("registry.py")  # mmiris/encoders/registry.py
    assert source_version(*extract.CODE) != before[1]


def test_code_version_is_cached_per_process(monkeypatch):
    source_version("mmiris.eval")
    reads = []
    monkeypatch.setattr(code_version, "read_source", lambda p: reads.append(p) or b"")
    source_version("mmiris.eval")
    assert reads == []


_SLOW_PUBLISH = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mmiris.artifacts import ArtifactStore
    from mmiris.artifacts.store import ArtifactStore as S
    from mmiris.testing.crawl import publish_items

    root, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    real = S._write_version

    def slow(self, work, *a, **kw):
        meta = real(self, work, *a, **kw)  # everything written in _staging, not yet renamed
        ready.write_text(work)
        while not go.exists():
            time.sleep(0.05)
        return meta

    S._write_version = slow
    print(publish_items(ArtifactStore(root), [{"item_id": 1, "title": "A"}, {"item_id": 2, "title": "B"}]))
""")


@pytest.mark.slow
def test_a_concurrent_publish_survives_artifacts_gc(tmp_path):
    root, ready, go = tmp_path / "store", tmp_path / "ready", tmp_path / "go"
    pub = subprocess.Popen(
        [sys.executable, "-c", _SLOW_PUBLISH, str(root), str(ready), str(go)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not ready.exists():
            assert pub.poll() is None, pub.communicate()
            assert time.time() < deadline, "the publishing process never reached its staging step"
            time.sleep(0.05)
        work = Path(ready.read_text())
        assert work.parent.name == "_staging" and work.is_dir()
        gc = subprocess.run(
            [sys.executable, "-c", CLI, "artifacts", "gc", "--store", str(root)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert gc.returncode == 0, gc.stderr
        assert "removed 0 " in gc.stdout
        assert work.is_dir(), "gc removed a publish that was still in flight"
    finally:
        go.touch()
        out, err = pub.communicate(timeout=120)
    assert pub.returncode == 0, err
    from mmiris.artifacts import ArtifactStore

    store = ArtifactStore(root)
    ref = store.resolve(out.strip().splitlines()[-1])
    assert store.read_table(ref).num_rows == 2
    assert not any((root / "_staging").iterdir())
