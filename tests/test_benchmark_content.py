"""The content benchmark's own logic (benchmarks/content.py) that decides which rows run."""

from benchmarks import content


def test_cold_rows_of_content_models_select_on_new_item_scoring_and_older_rows_rerun():
    # only models with a content path for new items, only on the cold split
    assert content.wanted_select("cold", "hybrid_iris", "cold") == "cold"
    assert content.wanted_select("cold", "vbpr", "cold") == "cold"
    assert content.wanted_select("cold", "nais_concat", "cold") == "warm"
    assert content.wanted_select("sparse", "hybrid_iris", "cold") == "warm"
    assert content.wanted_select("cold", "hybrid_iris", "warm") == "warm"
    # a row from before the field was warm-selected: it is stale when cold selection is asked
    old = {"train_config": {"lr": 0.001, "negatives_from": "trained"}}
    assert content.select_on(old) == "warm"
    assert content.select_on({"train_config": {"select_on": "cold"}}) == "cold"
    assert content.select_on({"error": "ValueError: x"}) == "warm"
