"""Reward registry and the weighted sum of several reward functions.

A reward function scores (prompt, completion) pairs: higher is better, NaN marks a completion it could
not score. `build_reward(specs)` turns the run config's reward terms (RewardSpec objects or plain dicts
with name / weight / params) into one CombinedReward whose output keeps every term separately, so the
step loop can log each one next to the weighted total.

Torch-free: the registry names import lazily ("module:attr"), so the app can list rewards and validate
parameters without loading a model.
"""

from __future__ import annotations

import collections.abc
import functools
import importlib
import inspect
import math
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class RewardOutput:
    total: list[float]  # (B,) weighted sum over terms; NaN when any term could not score the completion
    per_function: dict[str, list[float]]  # term key -> (B,) unweighted scores of that term
    seconds: dict[str, float] = field(default_factory=dict)  # term key -> wall time of this call


@runtime_checkable
class RewardFunction(Protocol):
    """What the registry's factories return."""

    name: str

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RewardEntry:
    name: str
    target: str  # "module:attr" of the factory; imported only when the reward is built
    description: str
    takes_device: bool = False  # the factory accepts device= (model-based rewards)
    # "module:attr" called with the typed params to check their values without building the reward (a
    # model-based reward must not load its model to say that batch_size=0 is wrong).
    checker: str | None = None

    def factory(self) -> Callable[..., RewardFunction]:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def parameters(self) -> dict[str, Any]:
        """The factory's keyword parameters and their defaults (what `params` may hold)."""
        sig = inspect.signature(self.factory())
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in sig.parameters.values()
            if p.name != "device" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }

    def param_types(self) -> dict[str, Any]:
        """Each parameter's type, read from the factory's annotations (so the check cannot drift from the code)."""
        factory = self.factory()
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
        return {name: hints.get(name, Any) for name in self.parameters()}


REWARDS: dict[str, RewardEntry] = {
    e.name: e
    for e in (
        RewardEntry(
            "bias_rm",
            "engine.rewards.bias_model:make_bias_reward",
            "The studio's bias reward model (or any HF sequence-classification folder via path=): "
            "scores the completion in its prompt's context in [0, 1], higher = less biased.",
            takes_device=True,
            checker="engine.rewards.bias_model:check_bias_reward_params",
        ),
        RewardEntry(
            "relevance",
            "engine.rewards.bias_model:make_relevance_reward",
            "The studio model's on-topic head: in [0, 1], the chance that the completion answers its prompt "
            "(off-topic, empty or evasive text scores low), so saying nothing cannot win the bias reward.",
            takes_device=True,
            checker="engine.rewards.bias_model:check_relevance_params",
        ),
        # Rule rewards are cheap to build, so building one is the check: their constructors own the rules.
        RewardEntry(
            "length",
            "engine.rewards.rules:LengthReward",
            "1 inside a target band of words, decaying smoothly outside it.",
            checker="engine.rewards.rules:LengthReward",
        ),
        RewardEntry(
            "refusal",
            "engine.rewards.rules:RefusalReward",
            "1 for an answer, 0 for refusal boilerplate (so refusing everything cannot win the bias reward).",
            checker="engine.rewards.rules:RefusalReward",
        ),
        RewardEntry(
            "format",
            "engine.rewards.rules:FormatReward",
            "1 for non-empty, non-degenerate text; lower for repeated n-grams or non-text output.",
            checker="engine.rewards.rules:FormatReward",
        ),
    )
}


def reward_names() -> list[str]:
    return list(REWARDS)


def _spec_fields(spec: Any) -> tuple[str, float, dict[str, Any]]:
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"name", "weight", "params"}
        if unknown:
            raise ValueError(f"reward spec {dict(spec)!r} has unknown keys {sorted(unknown)}; use name, weight, params")
        if "name" not in spec:
            raise ValueError(f"reward spec {dict(spec)!r} has no 'name'; choose from {reward_names()}")
        name, weight, params = spec["name"], spec.get("weight", 1.0), spec.get("params") or {}
    else:
        try:
            name, weight, params = spec.name, spec.weight, spec.params or {}
        except AttributeError as exc:
            raise TypeError(f"a reward spec must be a dict or have .name/.weight/.params, got {spec!r}") from exc
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose from {reward_names()}")
    weight = float(weight)
    if not math.isfinite(weight):
        raise ValueError(f"reward {name!r} has weight {weight}; give a finite number")
    if not isinstance(params, Mapping):
        raise ValueError(f"reward {name!r}: params must be a dict, got {type(params).__name__}")
    return name, weight, dict(params)


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """Raise ValueError when `params` names an option the reward does not have."""
    allowed = REWARDS[name].parameters()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"reward {name!r} has no parameter(s) {unknown}; its parameters are {sorted(allowed)}")


def _describe_type(tp: Any) -> str:
    if tp is bool:
        return "true or false"
    if tp is int:
        return "a whole number"
    if tp is float:
        return "a number"
    if tp is str:
        return "text"
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe_type(a) for a in typing.get_args(tp))
    if origin in (list, tuple, Sequence, collections.abc.Sequence):
        return "a list of " + " or ".join(_describe_type(a) for a in typing.get_args(tp)[:1] or (Any,))
    return "a JSON value"


@functools.cache
def _param_model(name: str) -> Any:
    from pydantic import ConfigDict, create_model

    fields = {p: (tp, None) for p, tp in REWARDS[name].param_types().items()}
    return create_model(f"{name}_params", __config__=ConfigDict(strict=True, allow_inf_nan=False, extra="forbid"),
                        **fields)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_params(name: str, params: Mapping[str, Any]) -> None:
    """Raise ValueError (one line) unless `params` are options reward `name` has, of the right types and values.

    Torch-free and model-free: types come from the factory's annotations (strict: no text for numbers, no
    true for 1, finite numbers only), values from the entry's checker.
    """
    from pydantic import ValidationError

    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}: choose one of {', '.join(REWARDS)}")
    check_params(name, params)
    types_ = REWARDS[name].param_types()
    try:
        _param_model(name).model_validate(dict(params))
    except ValidationError as exc:
        bad = str(exc.errors()[0]["loc"][0])
        what = "a finite number" if exc.errors()[0]["type"] == "finite_number" else _describe_type(types_[bad])
        raise ValueError(f"reward {name!r} parameter {bad!r} must be {what}, got {_short(params[bad])}") from None
    checker = REWARDS[name].checker
    if checker:
        module, _, attr = checker.partition(":")
        try:
            getattr(importlib.import_module(module), attr)(**params)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"reward {name!r}: {exc}") from None


class CombinedReward:
    """Weighted sum of reward functions; each term's scores are kept under its key in `per_function`.

    A term with weight 0 is still computed and reported: a way to monitor a reward without optimising it.
    Keys are the reward names; a name used twice gets "#2", "#3", ... so both are logged.
    """

    def __init__(self, terms: Sequence[tuple[str, float, RewardFunction]]) -> None:
        if not terms:
            raise ValueError("a combined reward needs at least one term, e.g. {'name': 'bias_rm'}")
        self._terms = list(terms)

    @property
    def names(self) -> list[str]:
        return [key for key, _, _ in self._terms]

    @property
    def weights(self) -> dict[str, float]:
        return {key: w for key, w, _ in self._terms}

    def __call__(self, prompts: list[str], completions: list[str]) -> RewardOutput:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts and {len(completions)} completions; pass one prompt per "
                             "completion (repeat a prompt G times for its G completions)")
        n = len(completions)
        per_function: dict[str, list[float]] = {}
        seconds: dict[str, float] = {}
        total = [0.0] * n
        for key, weight, fn in self._terms:
            start = time.perf_counter()
            scores = [float(s) for s in fn(list(prompts), list(completions))]
            seconds[key] = time.perf_counter() - start
            if len(scores) != n:
                raise RuntimeError(f"reward {key!r} returned {len(scores)} scores for {n} completions")
            per_function[key] = scores
            # NaN propagates (even with weight 0, 0 * nan = nan): an unscorable completion stays marked.
            total = [t + weight * s for t, s in zip(total, scores)]
        return RewardOutput(total=total, per_function=per_function, seconds=seconds)

    def close(self) -> None:
        for _, _, fn in self._terms:
            fn.close()

    def __enter__(self) -> CombinedReward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_reward(specs: Sequence[Any], device: str = "cpu") -> CombinedReward:
    """Build the weighted sum of the given reward terms (RewardSpec-like objects or dicts)."""
    parsed = [_spec_fields(s) for s in specs]
    for name, _, params in parsed:
        check_params(name, params)  # before building anything: a typo should not cost a model load
    terms: list[tuple[str, float, RewardFunction]] = []
    seen: dict[str, int] = {}
    try:
        for name, weight, params in parsed:
            entry = REWARDS[name]
            kwargs = {**params, "device": device} if entry.takes_device else params
            fn = entry.factory()(**kwargs)
            seen[name] = seen.get(name, 0) + 1
            key = name if seen[name] == 1 else f"{name}#{seen[name]}"
            terms.append((key, weight, fn))
    except BaseException:
        for _, _, fn in terms:
            fn.close()
        raise
    return CombinedReward(terms)
