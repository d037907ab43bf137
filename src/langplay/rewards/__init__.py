"""Scorers: anything that maps (prompts, completions, dataset columns) to one float per completion.

A user's reward is a plain callable `f(prompts, completions, **columns) -> list[float]`, as in TRL. Inside
langplay every scorer has one contract, as oat's oracles do: `score(prompts, completions, columns)` returns the
rewards *and* the metrics that go with them (a reward's parts, a judge's parse outcomes), never through an
attribute read back later. `build_scorer` turns the config's reward list into one weighted sum; a function that
raises or returns the wrong number of values is reported with its name and the sample it failed on.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Callable, Protocol

from langplay.config import HttpJudgeConfig, RewardSpec
from langplay.errors import LangplayError, first_line


class Scorer(Protocol):
    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float]: ...


def scorer_name(scorer: Callable) -> str:
    return getattr(scorer, "__name__", None) or type(scorer).__name__


def import_function(spec: str) -> Callable:
    """'package.module:name' or 'path/to/file.py:name' -> the callable."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise LangplayError(f"reward function {spec!r} must look like 'module:name' or 'file.py:name'")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise LangplayError(f"reward function file not found: {path}")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except LangplayError:
        raise
    except Exception as exc:  # ImportError, a SyntaxError in the file, anything it raises at import
        raise LangplayError(f"cannot import reward module {module_name!r}: {type(exc).__name__}: {first_line(exc)}") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise LangplayError(f"reward function {spec!r}: {module_name} has no callable {attr!r}")
    return function


def scorer_from_spec(spec: RewardSpec, http_judge: HttpJudgeConfig | None = None) -> Scorer:
    """The scorer of one config entry; `http_judge`: the settings of a judge served over HTTP (None: defaults)."""
    if spec.kind == "function":
        return import_function(spec.function)
    if spec.kind == "reward_model":
        from langplay.rewards.reward_model import RewardModelScorer

        return RewardModelScorer(spec.model)
    if spec.kind == "irl":  # the implicit reward of an IRL-trained model, summed over the completion
        from langplay.rewards.implicit import ImplicitRewardScorer

        return ImplicitRewardScorer(spec.model, spec.gamma)
    if spec.kind == "http_judge":
        from langplay.rewards.http_judge import HttpJudgeReward

        return HttpJudgeReward(spec.url, spec.model, http_judge or HttpJudgeConfig())
    from langplay.rewards import verifiers

    return verifiers.make(spec.kind, spec.answer_column)


def call_scorer(scorer: Scorer, prompts: list[str], completions: list[str], columns: dict[str, list]) -> list[float]:
    name = scorer_name(scorer)
    try:
        values = list(scorer(prompts, completions, **columns))
    except LangplayError:
        raise
    except Exception as exc:
        raise LangplayError(
            f"reward function {name!r} raised {type(exc).__name__}: {exc} "
            f"(on the batch starting with prompt {prompts[0][:80]!r}, completion {completions[0][:80]!r})"
        ) from exc
    if len(values) != len(completions):
        raise LangplayError(f"reward function {name!r} returned {len(values)} values for {len(completions)} completions")
    try:
        return [float("nan") if v is None else float(v) for v in values]
    except (TypeError, ValueError):
        bad = next(i for i, v in enumerate(values) if not isinstance(v, (int, float)) and v is not None)
        raise LangplayError(
            f"reward function {name!r} returned {values[bad]!r} for completion {completions[bad][:80]!r}: expected a number"
        ) from None


Scored = tuple[list[float], dict[str, float]]  # rewards, one per completion, and their metrics


class FunctionScorer:
    """A user's reward function under the scorer contract: its values, checked, and their mean as a metric."""

    def __init__(self, function: Scorer):
        self.function, self.name = function, scorer_name(function)

    def score(self, prompts: list[str], completions: list[str], columns: dict) -> Scored:
        values = call_scorer(self.function, prompts, completions, columns)
        finite = [v for v in values if v == v]
        return values, {f"reward/{self.name}": sum(finite) / len(finite) if finite else float("nan")}


def as_scorer(scorer) -> FunctionScorer:
    """Anything with `score` as it is; a plain callable wrapped."""
    return scorer if hasattr(scorer, "score") else FunctionScorer(scorer)


class WeightedSum:
    """The sum of several scorers with weights; its metrics are each part's."""

    def __init__(self, scorers: list, weights: list[float] | None = None):
        if not scorers:
            raise LangplayError("no reward given: add at least one entry to the rewards list")
        self.scorers = [as_scorer(s) for s in scorers]
        self.weights = weights or [1.0] * len(scorers)

    def score(self, prompts: list[str], completions: list[str], columns: dict) -> Scored:
        total, metrics = [0.0] * len(completions), {}
        for scorer, weight in zip(self.scorers, self.weights):
            values, parts = scorer.score(prompts, completions, columns)
            metrics.update(parts)
            total = [t + weight * v for t, v in zip(total, values)]
        return total, metrics


def answer_columns(specs: list[RewardSpec]) -> list[str]:
    """The dataset columns the config's verifiers read their gold answers from."""
    from langplay.rewards.verifiers import CHECKS

    return [spec.answer_column for spec in specs if spec.kind in CHECKS]


def repeated_columns(rows: list[dict], n: int, prompt_column: str) -> dict[str, list]:
    """Each row's columns repeated for its n completions, plus `raw_prompt` (the unformatted prompt)."""
    columns = {key: [row[key] for row in rows for _ in range(n)] for key in rows[0]}
    columns["raw_prompt"] = [row[prompt_column] for row in rows for _ in range(n)]
    return columns


def build_scorer(specs: list[RewardSpec], extra: list[Scorer] | None = None,
                 http_judge: HttpJudgeConfig | None = None) -> WeightedSum:
    """The config's rewards plus any Python callables given directly (weight 1)."""
    scorers = [scorer_from_spec(spec, http_judge) for spec in specs] + list(extra or [])
    weights = [spec.weight for spec in specs] + [1.0] * len(extra or [])
    return WeightedSum(scorers, weights)
