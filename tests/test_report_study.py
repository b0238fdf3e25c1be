"""The study's tables and curves (mmiris/report/study.py) in the report and in markdown."""

import json

import pytest

from mmiris.artifacts import ArtifactStore
from mmiris.errors import MmirisError
from mmiris.pipelines.report import build_report
from mmiris.report import study as S


def _row(model, seed, hr10, variant="", emb=16, **kw):
    return {
        "key": f"{model}:{emb}:{seed}",
        "model": model,
        "emb": emb,
        "seed": seed,
        "variant": variant,
        "hr10": hr10,
        "ndcg10": hr10 / 2,
        "hr20": hr10 + 0.1,
        "ndcg20": hr10 / 2 + 0.02,
        "full_hr10": hr10 / 10,
        "full_ndcg10": hr10 / 20,
        "best_epoch": 5 + seed,
        "stopped": "early",
        "epoch_seconds": 10.0,
        "explanation_overlap": 0.4 if "nais" in model or "iris" in model else None,
        "valid_curve": [0.7, 0.75, 0.8][: 2 + seed % 2],
        **kw,
    }


@pytest.fixture()
def study_file(tmp_path):
    rows = [
        _row("nais_concat", 0, 0.70),
        _row("nais_concat", 1, 0.72),
        _row("nais_concat", 2, 0.71),
        _row("multimodal_iris", 0, 0.69),
        _row("multimodal_iris", 0, 0.60, variant="shuffled"),
        _row("fism", 0, 0.65),
        {"key": "mf:16:0", "model": "mf", "emb": 16, "seed": 0, "error": "boom"},
    ]
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"rows": rows, "summary": {}}))
    return path


def test_cells_are_mean_and_sample_std_over_seeds(study_file):
    doc = S.load_study(study_file)
    c = S.cell(doc, "nais_concat", 16, "hr10")
    assert c.n == 3 and c.mean == pytest.approx(0.71) and c.std == pytest.approx(0.01)
    assert c.text() == "0.7100 ± 0.0100"
    assert S.cell(doc, "multimodal_iris", 16, "hr10", "shuffled").text() == "0.6000"
    md = S.markdown(doc)
    assert "| NAIS_concat | 0,1,2 | 0.7100 ± 0.0100 |" in md
    assert "features shuffled across items" in md and "MF" not in md.split("Table IV")[0]  # error rows left out
    control = md.split("Control:")[1].split("**Table")[0]
    assert "Image-add-Text" not in control  # no control of its own yet: its row stays in Table II only
    rows = [_row("image_add_text_iris", 0, 0.68), _row("image_add_text_iris", 0, 0.66, variant="shuffled")]
    study_file.write_text(json.dumps({"rows": json.loads(study_file.read_text())["rows"] + rows, "summary": {}}))
    control = S.markdown(S.load_study(study_file)).split("Control:")[1].split("**Table")[0]
    assert "| Image-add-Text IRIS, real features | 1 | 0.6800 |" in control
    assert "| Image-add-Text IRIS, features shuffled across items | 1 | 0.6600 |" in control


def test_report_shows_the_study_tables_and_curves(tmp_path, study_file):
    path = build_report(ArtifactStore(tmp_path / "store"), tmp_path / "out", study=study_file)
    page = path.read_text()
    assert "ML-1M study" in page and "0.7100 ± 0.0100" in page and "Multimodal IRIS" in page
    assert "validation curves" in page and (tmp_path / "out" / "figures" / "study-curves-16.png").exists()


def test_a_bad_study_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text("{not json")
    with pytest.raises(MmirisError, match="not JSON"):
        S.load_study(bad)
    with pytest.raises(MmirisError, match="no such file"):
        S.load_study(tmp_path / "missing.json")


def test_report_cli_takes_a_study_file(tmp_path, study_file, capsys):
    from mmiris.cli import main

    assert (
        main(["--store", str(tmp_path / "store"), "report", "--out", str(tmp_path / "r"), "--study", str(study_file)])
        == 0
    )
    assert "0.7100 ± 0.0100" in (tmp_path / "r" / "report.html").read_text()
    assert (
        main(
            [
                "--store",
                str(tmp_path / "store"),
                "report",
                "--out",
                str(tmp_path / "r2"),
                "--study",
                str(tmp_path / "nope.json"),
            ]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err


def test_batch_composition_table_appears_with_a_mixed_batch_row(tmp_path, study_file):
    doc = S.load_study(study_file)
    assert "Batch composition" not in S.markdown(doc)  # no mixed row yet: no table
    rows = json.loads(study_file.read_text())["rows"]
    rows.append(_row("multimodal_iris", 0, 0.705, variant="mixed", explanation_overlap=0.12))
    study_file.write_text(json.dumps({"rows": rows, "summary": {}}))
    md = S.markdown(S.load_study(study_file))
    assert "| Multimodal IRIS, users mixed in every batch | 1 | 0.7050 | 0.3525 | 0.0705 | 0.1200 |" in md
    assert "| Multimodal IRIS, one user per batch (the NAIS paper's batching) | 1 | 0.6900 |" in md
    assert "| Multimodal IRIS | 0 | 0.6900 |" in md  # Table II keeps the paper's batching only


def test_hybrid_without_content_dropout_is_its_own_row_of_table_ii(study_file):
    rows = json.loads(study_file.read_text())["rows"]
    rows += [_row("hybrid_iris", 0, 0.70), _row("hybrid_iris", 0, 0.72, variant="nodrop")]
    study_file.write_text(json.dumps({"rows": rows, "summary": {}}))
    md = S.markdown(S.load_study(study_file))
    assert "| Hybrid IRIS | 0 | 0.7000 |" in md
    assert "| Hybrid IRIS, no content dropout | 0 | 0.7200 |" in md
