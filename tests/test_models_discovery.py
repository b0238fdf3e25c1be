"""A new model is one file in the models package: the registry finds it with no other edit."""

import sys
import textwrap

import mmiris.models as models


def test_a_new_model_file_is_registered_without_editing_the_registry(tmp_path, monkeypatch):
    (tmp_path / "constant_model.py").write_text(
        textwrap.dedent("""
        import torch
        from mmiris.models import register
        from mmiris.models.base import ModelConfig, Recommender

        @register
        class Constant(Recommender):
            name = "constant_for_test"
            config_cls = ModelConfig

            def scores(self, users, items):
                return torch.zeros(items.shape)
    """)
    )
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "mmiris.models.constant_model", raising=False)
    try:
        assert "constant_for_test" in models.model_names()
        cls = models.get_model_class("constant_for_test")
        assert cls.__module__ == "mmiris.models.constant_model"
    finally:
        models.MODELS.pop("constant_for_test", None)
        sys.modules.pop("mmiris.models.constant_model", None)


def test_shared_modules_are_not_models():
    names = models.model_names()
    assert {"nais_prod", "multimodal_iris", "ease", "neumf"} <= set(names)
    assert not {"base", "layers", "attentive"} & set(names)
