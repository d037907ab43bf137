"""Evaluation: rewards of a model's completions on held-out prompts."""

from __future__ import annotations

from langplay.rewards import repeated_columns
from langplay.sampling import make_sampler
from langplay.sampling.hf import key_of


def evaluate_rewards(policy, rows, scorer, sampling, prompt_column="prompt", system_prompt=None, n=1, seed=0,
                     batch_size=32) -> dict:
    """Mean reward (and each scorer's mean) of n sampled completions per prompt."""
    sampler = make_sampler(sampling, policy)
    rewards, parts = [], {}
    for start in range(0, len(rows), batch_size):
        chunk = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
        prompts = [policy.format_prompt(r[prompt_column], system_prompt) for r in chunk]
        samples = sampler.generate(prompts, n, [key_of(seed, -1, start + i) for i in range(len(chunk))])
        columns = repeated_columns(chunk, n, prompt_column)
        values, metrics = scorer.score([p for p in prompts for _ in range(n)], samples.texts, columns)
        rewards += values
        for key, value in metrics.items():
            parts[key] = parts.get(key, 0.0) + value * len(values)
    report = {"prompts": len(rows), "samples": len(rewards), "reward": sum(rewards) / len(rewards)}
    report.update({k: v / len(rewards) for k, v in parts.items()})
    return report


def evaluate_rewards_from_config(config, n: int = 1) -> dict:
    from langplay.data import load_rows, require_columns
    from langplay.policy import Policy
    from langplay.rewards import build_scorer

    data = config.data
    rows = load_rows(data.eval_path or data.path, data.subset, data.eval_split or data.split, data.max_samples, data.where)
    require_columns(rows, [data.prompt_column], f"dataset {data.eval_path or data.path!r}")
    policy = Policy.from_config(config.model, with_reference=False)
    scorer = build_scorer(config.grpo.rewards)
    return evaluate_rewards(policy, rows, scorer, config.sampling, data.prompt_column, data.system_prompt, n,
                            config.train.seed)
