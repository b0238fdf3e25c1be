"""The search space of a hyperparameter study (``mmiris tune``, ``mmiris.pipelines.tune``).

    params = search_space("nais_prod", {"lr": "1e-4:1e-2:log", "beta": [0.5, 0.8]})

Grammar (CLI ``--space NAME=SPEC``, JSON files and the ``space`` argument): ``LOW:HIGH``
uniform, ``LOW:HIGH:log`` log-uniform, ``...:int`` integers (int fields are integers
anyway), ``A,B,C`` choices (JSON values), ``V`` one fixed value, ``off`` drop a default
parameter. A parameter is a field of the model's config or one of ``TRAIN_FIELDS`` of
``TrainConfig``; every range end and choice is checked against them when the space is built.
See docs/training.md "Tuning".
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields

from mmiris.errors import MmirisError
from mmiris.models import get_model_class
from mmiris.models.base import Recommender
from mmiris.models.build import build_config
from mmiris.train.config import TrainConfig

# TrainConfig fields a search may vary; epochs, patience and seed are the budget, set per run.
TRAIN_FIELDS = ("lr", "batch_size", "negatives", "loss", "batch_order")


@dataclass(frozen=True)
class Param:
    """One searched field: a float/int range (optionally log) or a list of choices."""

    name: str
    target: str  # "model" (model config field) or "train" (TrainConfig field)
    type: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def to_dict(self) -> dict:
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        return {"type": self.type, "low": self.low, "high": self.high, "log": self.log}

    def describe(self) -> str:
        if self.type == "categorical":
            return ",".join(json.dumps(c) for c in self.choices)
        return f"{self.low:g}:{self.high:g}" + (":log" if self.log else "") + (":int" if self.type == "int" else "")

    def suggest(self, trial):
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value) -> bool:
        if self.type == "categorical":
            return value in self.choices
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and self.low is not None
            and self.high is not None
            and self.low <= value <= self.high
        )


def _range(low, high, log=False) -> dict:
    return {"type": "float", "low": low, "high": high, "log": log}


# Defaults: learning rate, batch size, and the λ terms of eq. 12 / β / attention size where
# the model's config has them (a field the config lacks is never offered).
DEFAULT_SPACE: dict[str, dict] = {
    "lr": _range(1e-4, 1e-2, log=True),
    "batch_size": {"type": "categorical", "choices": [256, 512, 1024]},
    "reg_emb": _range(1e-8, 1e-3, log=True),  # λ1
    "reg_attention": _range(1e-8, 1e-3, log=True),  # λ2
    "reg_feature": _range(1e-8, 1e-3, log=True),  # λ3
    "reg_share": _range(1e-8, 1e-3, log=True),  # λ4
}
ATTENTION_SPACE: dict[str, dict] = {  # models with an attention network (cls.has_attention)
    "beta": _range(0.3, 1.0),
    "attention_size": {"type": "categorical", "choices": [8, 16, 32, 64]},
}
MODEL_SPACE: dict[str, dict[str, dict]] = {  # per-model additions and replacements
    "ease": {"l2": _range(10.0, 1e4, log=True)},
    "vbpr": {"reg_visual": _range(1e-8, 1e-3, log=True)},
    "neumf": {"reg_mlp": _range(1e-8, 1e-3, log=True)},
}


def _field_kinds(cls: type[Recommender]) -> dict[str, str]:
    """Tunable fields of the model config and TrainConfig → "float", "int", "bool" or "str"."""
    out = {}
    for f in fields(cls.config_cls):
        out[f.name] = _kind(f)
    if cls.trainable:
        for f in fields(TrainConfig):
            if f.name in TRAIN_FIELDS:
                out[f.name] = _kind(f)
    return out


def _kind(f) -> str:
    default = f.default if f.default is not MISSING else None
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if isinstance(default, t):
            return name
    ann = str(f.type)
    return "int" if ann.startswith("int") else "float" if ann.startswith("float") else "other"


def default_space(model_name: str) -> dict[str, dict]:
    """The model's default search space (canonical dicts), only fields its configs have."""
    cls = model_class(model_name)
    kinds = _field_kinds(cls)
    space = dict(DEFAULT_SPACE)
    if cls.has_attention:
        space.update(ATTENTION_SPACE)
    space.update(MODEL_SPACE.get(model_name, {}))
    return {k: v for k, v in space.items() if k in kinds}


def parse_spec(name: str, spec) -> dict | None:
    """A space entry (grammar in the module doc; or a list, number, canonical dict) → canonical
    dict, or None for ``off``."""
    where = f"search space {name}={spec if isinstance(spec, str) else json.dumps(spec)}"
    if spec is None or spec == "off":
        return None
    if isinstance(spec, dict):
        if "choices" in spec:
            return {"type": "categorical", "choices": list(spec["choices"])}
        try:
            return {
                "type": spec.get("type", "float"),
                "low": float(spec["low"]),
                "high": float(spec["high"]),
                "log": bool(spec.get("log", False)),
            }
        except (KeyError, TypeError, ValueError):
            raise MmirisError(f'{where}: expected {{"low", "high"[, "log"]}} or {{"choices": [...]}}') from None
    if isinstance(spec, (list, tuple)):
        return {"type": "categorical", "choices": list(spec)}
    if not isinstance(spec, str):
        return {"type": "categorical", "choices": [spec]}
    text = spec.strip()
    if ":" in text:
        low, high, *flags = (p.strip() for p in text.split(":"))
        bad = [f for f in flags if f not in ("log", "int")]
        if bad:
            raise MmirisError(f"{where}: unknown flag(s) {bad}; expected LOW:HIGH[:log][:int]")
        try:
            lo, hi = float(low), float(high)
        except ValueError:
            raise MmirisError(f"{where}: LOW and HIGH must be numbers") from None
        return {"type": "int" if "int" in flags else "float", "low": lo, "high": hi, "log": "log" in flags}
    return {"type": "categorical", "choices": [_value(v.strip()) for v in text.split(",") if v.strip()]}


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def search_space(
    model_name: str,
    space: dict | None = None,
    only: list[str] | None = None,
    model_config: dict | None = None,
    train_config: TrainConfig | None = None,
) -> list[Param]:
    """The parameters a study of ``model_name`` searches: the defaults, with ``space`` entries
    replacing or adding fields (``None``/``"off"`` drops one), restricted to ``only``. Every
    range end and choice is checked against the model and training configs."""
    cls = model_class(model_name)
    kinds = _field_kinds(cls)
    merged: dict[str, dict | None] = dict(default_space(model_name))
    for name, spec in (space or {}).items():
        if name not in kinds:
            extra = (
                f"; {', '.join(TRAIN_FIELDS)} do not apply: {model_name} is fitted in closed form"
                if name in TRAIN_FIELDS
                else ""
            )
            raise MmirisError(
                f"search space: unknown parameter {name!r} for model {model_name}; tunable: {sorted(kinds)}{extra}"
            )
        merged[name] = parse_spec(name, spec)
    if only is not None:
        unknown = sorted(set(only) - set(kinds))
        if unknown:
            raise MmirisError(
                f"search space: --only {unknown} not tunable for model {model_name}; tunable: {sorted(kinds)}"
            )
        merged = {k: v for k, v in merged.items() if k in only}
        missing = sorted(k for k in only if merged.get(k) is None)
        if missing:
            raise MmirisError(
                f"search space: --only {missing} have no default range for {model_name}: "
                "give one with --space NAME=SPEC"
            )
    params = []
    for name, d in merged.items():
        if d is None:
            continue
        params.append(_param(name, d, kinds[name], "train" if name in TRAIN_FIELDS else "model"))
    if not params:
        raise MmirisError(f"search space for {model_name} is empty")
    for p in params:
        _check_values(cls, p, model_config, train_config)
    return params


def _param(name: str, d: dict, kind: str, target: str) -> Param:
    where = f"search space {name}"
    if d["type"] == "categorical":
        choices = d["choices"]
        if not choices:
            raise MmirisError(f"{where}: no choices")
        out = []
        for c in choices:
            if kind == "float" and isinstance(c, (int, float)) and not isinstance(c, bool):
                c = float(c)
            ok = {
                "float": isinstance(c, float),
                "int": isinstance(c, int) and not isinstance(c, bool),
                "bool": isinstance(c, bool),
                "str": isinstance(c, str),
            }.get(kind, isinstance(c, (int, float, str)))
            if not ok:
                raise MmirisError(f"{where}: choice {c!r} is not a valid {kind} value")
            out.append(c)
        return Param(name, target, "categorical", choices=tuple(out))
    if kind not in ("float", "int"):
        raise MmirisError(f"{where}: a {kind} field takes choices (A,B,...), not a range")
    lo, hi, is_log = d["low"], d["high"], bool(d.get("log"))
    typ = "int" if kind == "int" or d["type"] == "int" else "float"
    if kind == "float" and typ == "int":
        typ = "float"  # ":int" on a float field: keep it a float range
    if not lo < hi:
        raise MmirisError(f"{where}: LOW {lo:g} must be below HIGH {hi:g}")
    if is_log and lo <= 0:
        raise MmirisError(f"{where}: a log range needs LOW > 0, got {lo:g}")
    if typ == "int" and (lo != int(lo) or hi != int(hi)):
        raise MmirisError(f"{where}: {name} is an integer field; LOW and HIGH must be integers")
    return Param(name, target, typ, lo, hi, is_log)


def _check_values(
    cls: type[Recommender], p: Param, model_config: dict | None, train_config: TrainConfig | None
) -> None:
    """Build the configs at each range end / choice, so a bad value fails now, not in trial 7."""
    values = list(p.choices) if p.type == "categorical" else [p.low, p.high]
    for v in values:
        v = int(v) if p.type == "int" and v is not None else v
        try:
            if p.target == "train":
                TrainConfig.from_dict({**(train_config or TrainConfig()).to_dict(), p.name: v})
            else:
                build_config(cls, {**(model_config or {}), p.name: v})
        except (MmirisError, ValueError, TypeError) as exc:
            raise MmirisError(f"search space {p.name}: value {v!r} is not accepted: {exc}") from None


def model_class(model_name: str) -> type[Recommender]:
    try:
        return get_model_class(model_name)
    except KeyError as exc:
        raise MmirisError(str(exc).strip("\"'")) from None
