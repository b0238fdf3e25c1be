"""The content benchmark's own logic (benchmarks/content.py) that decides which rows run."""

from benchmarks import content


def test_cold_rows_of_content_models_select_on_new_item_scoring_and_older_rows_rerun():
    # only models with a content path for new items, only on the cold split
    assert content.wanted_select("cold", "hybrid_iris", "cold") == "cold"
    assert content.wanted_select("cold", "vbpr", "cold") == "cold"
    assert content.wanted_select("cold", "nais_concat", "cold") == "warm"
    assert content.wanted_select("sparse", "hybrid_iris", "cold") == "warm"
    assert content.wanted_select("cold", "hybrid_iris", "warm") == "warm"
    assert content.wanted_select("cold_valid", "hybrid_iris", "cold") == "warm"  # its validation is cold already
    # a row from before the field was warm-selected: it is stale when cold selection is asked
    old = {"train_config": {"lr": 0.001, "negatives_from": "trained"}}
    assert content.select_on(old) == "warm"
    assert content.select_on({"train_config": {"select_on": "cold"}}) == "cold"
    assert content.select_on({"error": "ValueError: x"}) == "warm"


def test_study_variants_are_content_models_and_the_full_row_comes_from_the_same_variant():
    import pytest

    assert content.base_model("hybrid_iris+nodrop") == "hybrid_iris"
    assert content.base_model("hybrid_iris+simpath") == content.base_model("hybrid_iris+simpull") == "hybrid_iris"
    assert content.base_model("vbpr") == "vbpr"
    assert content.wanted_select("cold", "hybrid_iris+nodrop", "cold") == "cold"
    with pytest.raises(SystemExit, match="hybrid_iris\\+bogus"):
        content.base_model("hybrid_iris+bogus")
    cmd = {"epochs": 50, "patience": 3}
    rows = {
        "hybrid_iris:16:1": {"key": "hybrid_iris:16:1", "variant": "", "hr10": 0.68, "command": cmd},
        "hybrid_iris+nodrop:16:1": {
            "key": "hybrid_iris+nodrop:16:1",
            "variant": "nodrop",
            "hr10": 0.71,
            "command": cmd,
        },
        "hybrid_iris+nodrop:16:2": {
            "key": "hybrid_iris+nodrop:16:2",
            "variant": "nodrop",
            "error": "x",
            "command": cmd,
        },
    }
    assert content.study_row(rows, "hybrid_iris", 16, 1, 50, 3)["hr10"] == 0.68
    assert content.study_row(rows, "hybrid_iris+nodrop", 16, 1, 50, 3)["hr10"] == 0.71
    assert content.study_row(rows, "hybrid_iris+nodrop", 16, 2, 50, 3) is None  # failed rows are retrained
    assert content.study_row(rows, "hybrid_iris+nodrop", 16, 1, 20, 3) is None  # another epoch cap
    # a row under the plain model's key that is in fact a variant is never taken for the plain model
    mislabelled = {"hybrid_iris:16:0": {**rows["hybrid_iris+nodrop:16:1"], "key": "hybrid_iris:16:0"}}
    assert content.study_row(mislabelled, "hybrid_iris", 16, 0, 50, 3) is None


def test_the_summary_keeps_a_variant_apart_from_its_model():
    def row(setting, variant, seed, hr):
        key = f"{setting}/hybrid_iris{'+' + variant if variant else ''}:16:{seed}"
        return {"key": key, "setting": setting, "model": "hybrid_iris", "variant": variant, "seed": seed, "hr10": hr}

    rows = [row("full", "", 0, 0.68), row("full", "nodrop", 0, 0.71), row("full", "nodrop", 1, 0.72)]
    rows += [row("cold", "metric", 0, 0.25), {"key": "cold/vbpr:16:0", "setting": "cold", "error": "killed"}]
    summary = content.summarize(rows)
    assert sorted(summary["full"]) == ["hybrid_iris", "hybrid_iris+nodrop"]
    assert summary["full"]["hybrid_iris"]["hr10"]["n"] == 1
    assert summary["full"]["hybrid_iris+nodrop"]["hr10"] == {"mean": 0.715, "std": 0.0071, "n": 2}
    assert list(summary["cold"]) == ["hybrid_iris+metric"]  # the failed row is left out


def test_a_cold_validation_share_other_than_the_default_has_rows_of_its_own():
    """--cold-valid 0.1 names its rows (and split) cold_valid10, so they neither skip as done
    nor overwrite the default share's cold_valid rows; other settings keep their names."""
    assert content.setting_label("cold_valid", content.COLD_VALID) == "cold_valid"
    assert content.setting_label("cold_valid", 0.1) == "cold_valid10"
    assert content.setting_label("cold", 0.1) == "cold"
    key = content.content_key(content.setting_label("cold_valid", 0.1), "hybrid_iris+simfine", 16, 0)
    assert key == "cold_valid10/hybrid_iris+simfine:16:0"
    assert key != content.content_key("cold_valid", "hybrid_iris+simfine", 16, 0)
