"""Evaluation: rewards of a model's completions on held-out prompts; the trainer's periodic evaluation."""

from __future__ import annotations

from langplay.rewards import repeated_columns
from langplay.sampling import make_sampler
from langplay.sampling.keys import key_of


def evaluate_rewards(policy, rows, scorer, sampling, prompt_column="prompt", system_prompt=None, n=1, seed=0,
                     batch_size=32) -> dict:
    """Mean reward (and each scorer's mean) of n sampled completions per prompt."""
    sampler = make_sampler(sampling, policy)
    rewards, parts = [], {}
    for start in range(0, len(rows), batch_size):
        chunk = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
        prompts = [policy.format_prompt(r[prompt_column], system_prompt) for r in chunk]
        samples = sampler.generate(prompts, n, [key_of(seed, -1, start + i) for i in range(len(chunk))])
        columns = {**repeated_columns(chunk, n, prompt_column), "finished": list(samples.finished)}
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
    scorer = build_scorer(config.grpo.rewards, http_judge=config.http_judge)
    return evaluate_rewards(policy, rows, scorer, config.sampling, data.prompt_column, data.system_prompt, n,
                            config.train.seed)


EVAL_PROMPTS = 64  # held-out rows a periodic evaluation uses (the first ones of the eval set)


def eval_rows(config):
    """The held-out rows of a run: data.eval_path (or data.eval_split of data.path), the first EVAL_PROMPTS."""
    from langplay.data import load_rows
    from langplay.errors import LangplayError

    data = config.data
    if not (data.eval_path or data.eval_split):
        raise LangplayError("run.eval_every needs held-out data: set data.eval_path (or data.eval_split)")
    return load_rows(data.eval_path or data.path, data.subset, data.eval_split or data.split, EVAL_PROMPTS, data.where)


def periodic_evaluation(config, rewards=None):
    """What `run.eval_every` runs: the mean reward of the config's rewards (and any Python ones) on held-out
    prompts, one sample each at the sampling temperature; for algorithms that learn from demonstrations (no
    rewards), the held-out NLL per token of the eval demonstrations."""
    from langplay.data import encode_sft, require_columns, sft_pair
    from langplay.logprobs import completion_logprob_sums
    from langplay.rewards import build_scorer

    rows = eval_rows(config)
    data, specs = config.data, getattr(getattr(config, config.algorithm), "rewards", None)
    if specs is None:  # demonstrations: held-out NLL
        def nll(policy, step: int) -> dict:
            pairs = [encode_sft(policy, *sft_pair(rows[i], data), data.system_prompt, config.sft.max_length)
                     for i in range(len(rows))]
            sums = completion_logprob_sums(policy.model, [p for p, _ in pairs], [c for _, c in pairs],
                                           policy.tokenizer.pad_token_id, config.train.micro_batch_size)
            return {"nll": -sum(sums) / sum(len(c) for _, c in pairs)}

        return nll
    require_columns(rows, [data.prompt_column], "the eval dataset")
    scorer = build_scorer(specs, rewards, config.http_judge)

    def reward(policy, step: int) -> dict:
        report = evaluate_rewards(policy, rows, scorer, config.sampling, data.prompt_column, data.system_prompt,
                                  seed=config.train.seed)
        return {key: value for key, value in report.items() if key not in ("prompts", "samples")}

    return reward
