"""The reward a language model implies when its logits are read as soft Q-values (inverse soft-Q learning).

Token MDP (Wulfmeier et al. 2024, §3): state s_t = (x, y_<t), action a_t = y_t. Q(s, a) = logits(s)[a],
V(s) = logsumexp_a Q(s, a), pi = softmax Q, so Q = log pi + V, and the implicit per-token reward is

    r(s_t, a_t) = Q(s_t, a_t) - gamma V(s_{t+1}) = log pi(a_t|s_t) + V(s_t) - gamma V(s_{t+1}).

After EOS the state is terminal (V = 0). A response cut without EOS is truncated, not terminal: the value of the
state after its last token is bootstrapped from the model. With gamma = 1 and a terminal response the sum of r
telescopes to log pi(y|x) + V(s_0).

The per-token quantities are pure tensor functions in `langplay.losses` (the IRL algorithm trains with them);
here, a model's implicit rewards of given responses: `ImplicitRewardScorer` (RewardSpec kind "irl") scores
responses with an IRL-trained model for RL, by the sum of r over the response (the paper's extracted reward);
`evaluation.metrics.reward_agreement` measures how well that reward ranks responses as a checker does.

gamma is always given: none of these functions defaults to 1, where the summed reward is log pi(y|x) + V(s_0) and,
V(s_0) being the same for every response to a prompt, ranks a group's responses by their log-likelihood alone. A
model saved by an IRL run records the irl.gamma it trained with (`Policy.facts`, langplay.json); `recorded_gamma`
reads it back, and the irl reward kind uses it unless the spec sets gamma.
"""

from __future__ import annotations

import torch

from langplay.batch import build_batch
from langplay.config import ModelConfig
from langplay.errors import LangplayError
from langplay.logprobs import sequence_logprobs
from langplay.losses import ends_with_eos, implicit_token_rewards
from langplay.models import model_facts
from langplay.policy import Policy

GAMMA_FACT = "irl_gamma"  # the key of an IRL run's irl.gamma in the facts saved with its models (Policy.facts)


def recorded_gamma(name_or_path: str) -> float | None:
    """The irl.gamma an IRL run trained the model with, from the facts saved beside it; None: none recorded."""
    gamma = model_facts(name_or_path).get(GAMMA_FACT)
    if gamma is not None and not (isinstance(gamma, (int, float)) and 0 <= gamma <= 1):
        raise LangplayError(f"{name_or_path}: the recorded {GAMMA_FACT} {gamma!r} is not a number in [0, 1]")
    return None if gamma is None else float(gamma)


def resolve_gamma(name_or_path: str, gamma: float | None) -> float:
    """`gamma` when given, else the one recorded with the model; neither is a one-line error."""
    gamma = recorded_gamma(name_or_path) if gamma is None else gamma
    if gamma is None:
        raise LangplayError(
            f"the implicit reward of {name_or_path} needs gamma: the model records none (langplay IRL runs save "
            "their irl.gamma beside the weights), so give the gamma it was trained with, e.g. "
            f"{{kind: irl, model: {name_or_path}, gamma: 0.99}}")
    return float(gamma)


@torch.no_grad()
def implicit_rewards(policy: Policy, prompts: list[str], responses: list[str], gamma: float,
                     terminal: bool = True, micro_batch_size: int = 16) -> tuple[list[list[float]], list[float]]:
    """Per-token implicit rewards of each response after its (already formatted) prompt, and their sums.

    `terminal`: the response is complete, so EOS is appended and scored as its last action (the value after it is
    0); False scores the text as a truncated prefix (the value after it is bootstrapped from the model).
    """
    eos = policy.tokenizer.eos_token_id
    prompt_ids = [policy.encode(p) for p in prompts]
    response_ids = [policy.encode(r) + ([eos] if terminal else []) for r in responses]
    per_token: list[list[float]] = []
    for start in range(0, len(prompts), micro_batch_size):
        stop = start + micro_batch_size
        batch = build_batch(prompt_ids[start:stop], response_ids[start:stop], policy.tokenizer.pad_token_id,
                            policy.device)
        out = sequence_logprobs(policy.model, batch, chunk_tokens=policy.chunk_tokens, with_values=True)
        rewards = implicit_token_rewards(out.logp, out.values, out.final_values, batch["completion_mask"],
                                         ends_with_eos(batch, eos), gamma)
        lengths = batch["completion_mask"].sum(1).long().tolist()
        per_token += [row[:n] for row, n in zip(rewards.tolist(), lengths)]
    return per_token, [sum(row) for row in per_token]


def extracted_rewards(policy: Policy, prompts: list[str], responses: list[str], finished: list[bool],
                      gamma: float, micro_batch_size: int = 16) -> list[float]:
    """Each response's extracted reward (the sum of its implicit rewards at `gamma`) after its formatted prompt: a
    response that ended with EOS (finished[i]) is terminal, one cut at the length limit is bootstrapped."""
    out = [0.0] * len(responses)
    for terminal in (True, False):
        index = [i for i, f in enumerate(finished) if f == terminal]
        if index:
            _, sums = implicit_rewards(policy, [prompts[i] for i in index], [responses[i] for i in index],
                                       gamma=gamma, terminal=terminal, micro_batch_size=micro_batch_size)
            for i, value in zip(index, sums):
                out[i] = value
    return out


class ImplicitRewardScorer:
    """Scores each completion by its extracted reward under an IRL-trained model (RewardSpec kind irl): the sum of
    its implicit rewards at `gamma` (None: the irl.gamma recorded with the model, `resolve_gamma`).

    `prompts` are the texts the policy continued (trainers pass formatted prompts), tokenised by this model's
    tokenizer as they are: the reward model should share the policy's tokenizer and chat template.

    The `finished` column (one bool per completion: it ended with EOS) is required. A finished completion is
    scored as terminal, its EOS the last action; one cut at the length limit is a truncated prefix whose last
    value is bootstrapped. The text cannot tell them apart (samplers decode without EOS), and guessing "finished"
    would score every cut completion as if the model had chosen to stop there; a caller scoring whole texts (a
    dataset's reference answers) passes finished=[True] * n.
    """

    def __init__(self, name_or_path: str, gamma: float | None = None, device: str = "auto", batch_size: int = 16):
        self.__name__ = f"irl:{name_or_path}"
        self.gamma = resolve_gamma(name_or_path, gamma)  # before loading the model: a missing gamma fails fast
        self.policy = Policy.from_config(ModelConfig(name_or_path=name_or_path, device=device), with_reference=False)
        self.policy.model.eval().requires_grad_(False)
        self.batch_size = batch_size

    def __call__(self, prompts: list[str], completions: list[str], finished: list[bool] | None = None,
                 **_) -> list[float]:
        if finished is None:
            raise LangplayError(
                f"reward {self.__name__!r} needs the column 'finished' (one bool per completion: True when it ended "
                "with EOS, scored as terminal; False when cut at the length limit, bootstrapped); pass "
                "finished=[True] * n for whole texts")
        if len(finished) != len(completions):
            raise LangplayError(f"reward {self.__name__!r}: {len(finished)} finished flags for "
                                f"{len(completions)} completions")
        return extracted_rewards(self.policy, prompts, completions, [bool(f) for f in finished], self.gamma,
                                 self.batch_size)
