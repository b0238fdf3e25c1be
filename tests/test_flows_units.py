"""Flow wiring that needs no Prefect server: retry decisions, parameters, names."""

from __future__ import annotations

import inspect
import types
import typing

import pytest
from prefect.states import Completed, Failed

from mmiris.crawl.parallel import CrawlIncomplete, CrawlStopped
from mmiris.errors import InputError, MmirisError
from mmiris.flows.retry_policy import retry_crawl, retry_unless_user_error
from mmiris.flows.torchrun import train_argv
from mmiris.flows.ui_artifacts import artifact_key
from mmiris.train.config import TrainConfig


def _failed(exc: BaseException):
    return Failed(data=exc, message=str(exc))


def test_user_errors_are_not_retried_but_network_errors_are():
    assert retry_unless_user_error(None, None, _failed(InputError("ratings.dat line 3: bad"))) is False
    assert retry_unless_user_error(None, None, _failed(MmirisError("no such artifact"))) is False
    assert retry_unless_user_error(None, None, _failed(ConnectionError("reset by peer"))) is True
    assert retry_unless_user_error(None, None, _failed(TimeoutError())) is True
    assert retry_unless_user_error(None, None, Completed(data=1)) is False


def test_crawls_retry_incomplete_runs_but_not_a_stopped_one():
    assert retry_crawl(None, None, _failed(CrawlIncomplete("3 items still failed"))) is True
    assert retry_crawl(None, None, _failed(CrawlStopped("quota", "daily quota reached"))) is False
    assert retry_crawl(None, None, _failed(InputError("links.csv line 2"))) is False
    assert retry_crawl(None, None, _failed(OSError("connection refused"))) is True


def test_network_tasks_have_retries_and_the_others_none():
    from mmiris.flows import crawl, evaluate, extract, ingest, recommend, split, train

    for t in (crawl.crawl_omdb_task, crawl.crawl_amazon_images_task):
        assert t.retries >= 2 and t.retry_condition_fn is retry_crawl
    for t in (
        ingest.ingest_movielens_task,
        ingest.ingest_ncf_task,
        ingest.ingest_amazon_task,
        ingest.ingest_new_items_task,
        extract.extract_image_task,
        extract.extract_text_task,
        extract.extract_new_item_features_task,
    ):
        assert t.retries >= 1 and t.retry_condition_fn is retry_unless_user_error
    for t in (split.split_task, train.train_task, evaluate.evaluate_task, recommend.recommend_task):
        assert t.retries == 0


def test_flows_take_refs_and_store_uris_as_strings_never_data():
    from mmiris.flows import crawl, demo_data, evaluate, extract, ingest, pipeline, recommend, report, split, train

    flows = [
        demo_data.demo_data_flow,
        ingest.ingest_movielens_flow,
        ingest.ingest_ncf_flow,
        ingest.ingest_amazon_flow,
        ingest.ingest_new_items_flow,
        crawl.crawl_omdb_flow,
        crawl.crawl_amazon_images_flow,
        extract.extract_image_features_flow,
        extract.extract_text_features_flow,
        extract.extract_new_item_features_flow,
        split.split_flow,
        train.train_flow,
        evaluate.evaluate_flow,
        recommend.recommend_flow,
        report.report_flow,
        pipeline.pipeline_flow,
        pipeline.demo_pipeline_flow,
        pipeline.new_items_pipeline_flow,
    ]
    for f in flows:
        sig = inspect.signature(f.fn)
        assert "store" in sig.parameters, f.name
        assert sig.parameters["store"].default is None, f.name
        for name, hint in inspect.get_annotations(f.fn, eval_str=True).items():
            assert _plain(hint), f"{f.name}.{name}: {hint} is not a plain JSON type"


def _plain(t) -> bool:
    """JSON values only: what a deployment parameter or a ref string can be."""
    origin = typing.get_origin(t)
    if origin is typing.Literal:
        return all(isinstance(v, (str, int, float, bool)) for v in typing.get_args(t))
    if origin in (typing.Union, types.UnionType, list, dict):
        return all(_plain(a) for a in typing.get_args(t))
    return t in (str, int, float, bool, type(None), typing.Any)


def test_torchrun_launcher_gets_the_configs_unchanged():
    from mmiris.train.launch import build_parser, configs

    model_settings = {"emb": 16, "beta": 0.5}
    train_settings = {"epochs": 2, "batch_size": 128, "lr": 0.01, "eval_batch_pairs": 1 << 20}
    argv = train_argv(
        "s@1",
        "nais_prod",
        model_settings,
        train_settings,
        store="/tmp/store",
        image_features="img@2",
        init_from="model-fism@3",
        resume=True,
    )
    assert not any(a.startswith(("--epochs", "--lr", "--set")) for a in argv)  # no flag translation
    args = build_parser().parse_args(argv)
    assert (args.split, args.model, args.store, args.image_features) == ("s@1", "nais_prod", "/tmp/store", "img@2")
    assert args.resume is True and args.init_from == ["model-fism@3"]
    model_config, train_config = configs(args)
    assert model_config == model_settings
    assert train_config == TrainConfig.from_dict(train_settings)  # every field, runtime ones too
    # NeuMF starts from two models: both reach the ranks, in order
    args = build_parser().parse_args(
        train_argv("s@1", "neumf", None, None, init_from=["model-neumf@a", "model-neumf@b"])
    )
    assert args.init_from == ["model-neumf@a", "model-neumf@b"]
    # people and job scripts: single options override the JSON configs
    args = build_parser().parse_args([*argv, "--epochs", "5", "--emb", "8", "--set", "beta=0.9"])
    model_config, train_config = configs(args)
    assert train_config.epochs == 5 and train_config.lr == 0.01 and model_config == {"emb": 8, "beta": 0.9}
    with pytest.raises(MmirisError, match="unknown field"):
        configs(build_parser().parse_args(train_argv("s", "mf", None, {"epochz": 1})))


def test_artifact_keys_are_valid_prefect_keys():
    assert artifact_key("metrics-nais_prod") == "metrics-nais-prod"
    assert artifact_key("pipeline", "Demo Run!") == "pipeline-demo-run"
