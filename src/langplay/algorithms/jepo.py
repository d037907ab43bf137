"""JEPO (Tang et al. 2025, arXiv 2503.19618): RL on unverifiable data with Jensen's evidence lower bound.

The chain of thought c is a latent variable; the reward is the likelihood of the reference answer a* after it.
For each prompt x: sample n generations y_i, cut each at its answer marker to get the chain c_i, then
    S_i   = log pi(a* | x, c_i)                      teacher-forced on [x, c_i, a*], summed over a*'s tokens
    L_1   = E[S]                                      single-sample (Jensen) bound
            A_i = S_i - mean_{j!=i} S_j,   supervised term (1/n) sum_i grad S_i
    L_n   = E[log (1/n) sum_i exp S_i]                multi-sample bound, L_1 <= L_n <= log pi(a*|x)
            A_i = n (lme(S) - lme_{j!=i}(S)),   supervised term grad lme(S) = sum_i softmax(S)_i grad S_i
    A~_i  = clip(A_i / std(A), -1, 1)         (the format advantage A~fmt_i likewise)
    update  (1/n) sum_i (A~_i + A~fmt_i) grad log pi(y_i|x)  +  beta_sup * supervised term  -  beta grad KL
Generations without the marker get a format reward -p (its leave-one-out advantage is A_fmt) and are left out
of the bound. JEPO + RL: a prompt for which a verifier is configured and one sample passes uses the ordinary RL
loss instead (0/1 reward, leave-one-out baseline).

Where the paper is ambiguous (our defaults, all in config.JEPOConfig):
- The score-function factor of the multi-sample bound is n (lme(S) - lme_{-i}(S)): with it the estimator is
  unbiased for grad L_n (the paper's (1/n) sum_i form drops the n, which the normalisation A/std removes anyway).
- std(A) is taken over the whole step by default (`normalize="batch"`): with n = 4 a group's std is very noisy,
  and per-group scaling would give every prompt the same advantage magnitude however informative its chains.
- The format reward's advantage is its leave-one-out difference, normalised and clipped like the bound's (the
  update line's A~fmt), over the step's JEPO prompts. Groups with fewer than two formatted generations have no
  bound advantage.
- The marker is matched case-insensitively, the last occurrence counts (langplay.text.marker_end, as the
  evaluation's proxy NLL cuts it); a* is preceded by a space when it does not start with one. S is the paper's
  log pi(a*|x, c): no EOS after a* unless `answer_suffix_eos` asks for it (then S includes stopping after a*).
- S_i and the surrogate use one temperature, sampling.temperature (1 in the paper and every preset).
- The score function is grad log pi(c_i|x), the chain's tokens (`policy_gradient="chain"`), as in the bound's
  derivation (the paper's single-sample estimator, §3): the generation's own answer after the marker is not
  part of the latent c and is replaced by a*. Then the rows [x | c_i, a*] give log pi(c_i|x) and S_i in one
  pass, and the step costs about an RL step plus the no-grad pass for S_i. The paper's update line writes
  grad log pi(y_i|x) over the whole generation: `policy_gradient="generation"` does that, with a* in rows of its
  own (twice the tokens in the training pass). Generations without a marker and RL prompts always use all of y_i.
- The KL (`kl_estimator="sequence"`): beta KL(pi || pi_ref) of each generation's policy-gradient tokens as a
  reward penalty with its reward-to-go (losses.kl_reward_to_go, as LSP's), whose expected gradient is exactly
  beta grad KL, averaged over the step's generations: the paper's sequence-level beta KL, weighed like the policy
  gradient. Under `chain` those tokens are the chain c_i, the part of y_i the update trains: the generation's own
  answer after the marker is not in the row (a* stands there) and gets no gradient to regularise. k1/k2/k3 sum
  Schulman's per-token estimator in the loss instead: k3's expected gradient is the per-state grad KL(pi_ref || pi),
  close to grad KL(pi || pi_ref) only near the reference (tests/test_jepo.py enumerates both).
- Generations drawn by a sampler other than the trainer (vLLM, bf16) are corrected as GRPO's are
  (`sampling.correction`, tis by default under vLLM), token by token on the policy-gradient term and the sequence
  KL (k1/k2/k3 stay uncorrected, as GRPO's and TRL's); tokens the sampler did not draw (a marker's re-encoded
  end) take weight 1. Token-level weights are exact for one-token draws and remove most of the bias otherwise.
"""

from __future__ import annotations

import math
import time

import torch

from langplay.algorithms import DataColumns, Experience, sampler_correction
from langplay.distributed import gather, total
from langplay.losses import (corrected_policy_loss, correction_weights, drawn_logprobs, kl_penalty, kl_reward_to_go,
                             leave_one_out_advantages, masked_sum, sampler_mismatch)
from langplay.batch import build_batch, token_rows
from langplay.logprobs import completion_logprob_sums
from langplay.rewards import answer_columns, build_scorer, repeated_columns
from langplay.rewards.verifiers import gold_answer
from langplay.text import after_marker, marker_end


# -- the estimators (pure functions of one group's S) ------------------------------------------------------------
def leave_one_out_log_mean_exp(scores: torch.Tensor) -> torch.Tensor:
    """lme_{j != i}(S_j) for every i, for a 1-D tensor of at least two scores."""
    n = scores.numel()
    others = scores.unsqueeze(0).expand(n, n).masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    return torch.logsumexp(others, dim=1) - math.log(n - 1)


def bound_advantages(scores: torch.Tensor, estimator: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_i, w_i) of one group: the score-function advantages and the supervised weights.

    The surrogate (1/n) sum_i A_i log pi(c_i) + sum_i w_i S_i, with A and w held constant, has as its
    gradient the unbiased estimator of grad L_1 (single) or grad L_n (multi).
    """
    n = scores.numel()
    if estimator == "single":
        return leave_one_out_advantages(scores), torch.full_like(scores, 1.0 / n)
    weights = torch.softmax(scores, dim=0)
    if n < 2:
        return torch.zeros_like(scores), weights
    bound = torch.logsumexp(scores, dim=0) - math.log(n)
    return n * (bound - leave_one_out_log_mean_exp(scores)), weights


def group_terms(scores: list[float | None], estimator: str, format_penalty: float) -> dict:
    """One prompt's JEPO terms from its n generations' S_i (None: no marker, out of the bound), float64:
    the bound's score-function advantages (`advantage`, with `in_bound` where they count: groups of two or more
    formatted generations), the supervised weights, the format reward's leave-one-out advantage, and the bound."""
    n = len(scores)
    formatted = [i for i, s in enumerate(scores) if s is not None]
    out = {"advantage": torch.zeros(n, dtype=torch.float64), "in_bound": torch.zeros(n, dtype=torch.bool),
           "sup_weight": torch.zeros(n, dtype=torch.float64), "bound": None,
           "format": leave_one_out_advantages(
               torch.tensor([0.0 if s is not None else -format_penalty for s in scores], dtype=torch.float64))}
    if formatted:
        values = torch.tensor([scores[i] for i in formatted], dtype=torch.float64)
        out["advantage"][formatted], out["sup_weight"][formatted] = bound_advantages(values, estimator)
        out["in_bound"][formatted] = len(formatted) > 1
        out["bound"] = float(torch.logsumexp(values, 0) - math.log(len(formatted)))
    return out


def rl_terms(rewards: torch.Tensor, threshold: float) -> dict:
    """A prompt on the RL loss (a sample passed the verifier): a 0/1 reward (pass: >= threshold; NaN fails) with a
    leave-one-out baseline, float64; no bound."""
    return {"rl": leave_one_out_advantages((rewards >= threshold).double()), "bound": None}


STEP_COLUMNS = {"advantage": torch.float64, "in_bound": torch.bool, "format": torch.float64, "rl": torch.float64,
                "sup_weight": torch.float64}


def stack_terms(terms: list[dict], n: int) -> dict[str, torch.Tensor]:
    """The step's per-generation columns (STEP_COLUMNS) from its prompts' terms (group_terms or rl_terms): zero
    (False) where a prompt has none, and `takes_jepo`, the generations of the prompts on the JEPO loss."""
    out = {key: torch.cat([t.get(key, torch.zeros(n, dtype=dtype)) for t in terms])
           for key, dtype in STEP_COLUMNS.items()}
    out["takes_jepo"] = torch.tensor([["rl" not in t] * n for t in terms], dtype=torch.bool).view(-1)
    return out


def normalize(advantages: torch.Tensor, clip: float | None, std: float | None = None) -> torch.Tensor:
    """clip(A / std(A), -c, c); a zero std (or a single value) gives zero advantages."""
    std = float(advantages.std()) if std is None and advantages.numel() > 1 else std
    if not std or std < 1e-8:
        return torch.zeros_like(advantages)
    scaled = advantages / std
    return scaled.clamp(-clip, clip) if clip is not None else scaled


def surrogate_loss(logp, batch, num_prompts: float, correction: str = "none", cap: float = 3.0) -> torch.Tensor:
    """-(1/num_prompts) sum_rows [pg_coef log pi(pg tokens) + sup_coef log pi(a*)]: the update line's policy
    gradient (sums, not means: the estimators need log pi of whole chains) and supervised term; the policy
    gradient's tokens corrected for the sampler that drew them."""
    policy_gradient = corrected_policy_loss(logp, drawn_logprobs(logp, batch["sampler_logp"], batch["sampler_known"]), batch["pg_coef"], correction, cap)
    supervised = batch["sup_coef"] * masked_sum(logp, batch["sup_mask"], dim=1)
    return (masked_sum(policy_gradient, batch["pg_mask"], dim=1) - supervised).sum() / num_prompts


def generation_kl(logp, ref_logp, batch, estimator: str, correction: str = "none", cap: float = 3.0) -> torch.Tensor:
    """Per row, KL(pi || pi_ref) over its policy-gradient tokens: the exact sequence surrogate (`sequence`) or
    Schulman's per-token estimator summed (k1, k2, k3)."""
    mask = batch["pg_mask"]
    if estimator == "sequence":
        weights = correction_weights(logp, drawn_logprobs(logp, batch["sampler_logp"], batch["sampler_known"]), correction, cap)
        return kl_reward_to_go(logp, ref_logp, mask, weights)
    return masked_sum(kl_penalty(logp, ref_logp, estimator), mask, dim=1)


# -- locating the chain of thought -----------------------------------------------------------------------------
def chain_ids(tokenizer, ids: list[int], marker: str) -> list[int] | None:
    """The generation's tokens up to the end of its last answer marker, or None without a marker.

    When a token straddles the marker's end (sub-word merges), the chain stops before it and the rest of the
    marker is re-encoded, so the chain always ends exactly at the marker.
    """
    text = tokenizer.decode(ids, skip_special_tokens=True)
    end = marker_end(text, marker)
    if end is None:
        return None
    low, high = 0, len(ids)  # the fewest tokens whose text reaches the marker's end
    while low < high:
        mid = (low + high) // 2
        if len(tokenizer.decode(ids[:mid], skip_special_tokens=True)) >= end:
            high = mid
        else:
            low = mid + 1
    prefix = ids[:low]
    decoded = tokenizer.decode(prefix, skip_special_tokens=True)
    if len(decoded) == end:
        return prefix
    prefix = ids[: low - 1]
    tail = text[len(tokenizer.decode(prefix, skip_special_tokens=True)) : end]
    return prefix + tokenizer(tail, add_special_tokens=False)["input_ids"]


class JEPO:
    name = "jepo"
    generates = True

    def __init__(self, config, policy, sampler, accelerator, rewards=None):
        self.config, self.policy, self.sampler, self.accelerator = config, policy, sampler, accelerator
        self.args = config.jepo
        has_verifier = bool(self.args.rewards or rewards)
        self.verifier = build_scorer(self.args.rewards, rewards, config.http_judge) if has_verifier else None
        self.needs_reference = self.args.beta > 0
        self.correction = sampler_correction(config)

    @classmethod
    def data_columns(cls, config) -> DataColumns:
        prompt, args = config.data.prompt_column, config.jepo
        required = [prompt, *answer_columns(args.rewards), args.answer_column]
        return DataColumns(list(dict.fromkeys(required)), [prompt])

    def answer_ids(self, answer: str) -> list[int]:
        text = after_marker(gold_answer(str(answer), self.args.answer_format))
        eos = [self.policy.tokenizer.eos_token_id] if self.args.answer_suffix_eos else []
        return self.policy.encode(text) + eos

    def verified(self, rows, prompts, samples) -> tuple[list[bool], torch.Tensor | None]:
        """Per prompt: does the verifier pass one of its samples (then it takes the RL loss)? NaN: no verifier."""
        if self.verifier is None:
            return [False] * len(rows), None
        n = self.args.group_size
        columns = {**repeated_columns(rows, n, self.config.data.prompt_column), "finished": list(samples.finished)}
        values, _ = self.verifier.score([p for p in prompts for _ in range(n)], samples.texts, columns)
        rewards = torch.tensor(values).view(-1, n)
        return [bool((r >= self.args.pass_threshold).any()) for r in rewards], rewards

    def collect(self, rows: list[dict], seeds: list[int]) -> Experience:
        cfg, args, n = self.config, self.args, self.args.group_size
        prompts = [self.policy.format_prompt(row[cfg.data.prompt_column], cfg.data.system_prompt) for row in rows]
        started = time.perf_counter()
        samples = self.sampler.generate(prompts, n, seeds)
        generated = time.perf_counter()
        use_rl, rewards = self.verified(rows, prompts, samples)

        # The chains c_i (None: no marker) and S_i = log pi(a*|x, c_i) for the prompts that take the JEPO loss.
        chains = [chain_ids(self.policy.tokenizer, ids, args.answer_marker) for ids in samples.completion_ids]
        answers = [self.answer_ids(row[args.answer_column]) for row in rows]
        scored = [i for i, c in enumerate(chains) if c is not None and not use_rl[i // n]]
        score_of = dict(zip(scored, self.answer_logliks(samples.prompt_ids, chains, answers, scored)))
        bounded = time.perf_counter()

        # Per prompt: the JEPO terms (group_terms), or the RL advantage where a sample passed the verifier.
        terms = [rl_terms(rewards[p], args.pass_threshold) if use_rl[p] else
                 group_terms([score_of.get(p * n + j) for j in range(n)], args.estimator, args.format_penalty)
                 for p in range(len(rows))]
        step = stack_terms(terms, n)
        advantage = self.normalized(step["advantage"], step["in_bound"])
        format_advantage = self.normalized(step["format"], step["takes_jepo"])
        pg_coef = (advantage + format_advantage + step["rl"]) / n
        sup_coef = args.beta_sup * step["sup_weight"]

        # One batch, one pass: each row's completion is the tokens under the policy gradient (pg_mask), then the
        # reference answer a* under the supervised term (sup_mask); see `training_rows`.
        layout = self.training_rows(samples, chains, set(scored), answers, pg_coef, sup_coef)
        batch = self.training_batch(layout, generation_rows=len(chains))
        timings = {"time/generate": generated - started, "time/bound": bounded - generated,
                   "time/reference": time.perf_counter() - bounded}
        counts, metrics = self.step_metrics(samples, chains, terms, score_of, use_rl, rewards, timings)
        counts["drawn_tokens"] = total(self.accelerator, (batch["pg_mask"] * batch["sampler_known"]).sum())
        shown = [
            {"prompt": prompts[i // n], "completion": samples.texts[i], "answer": str(rows[i // n][args.answer_column]),
             "log_likelihood": score_of.get(i), "advantage": pg_coef[i].item() * n}
            for i in range(min(cfg.run.samples_per_step, len(chains)))
        ]
        return Experience(batch, counts, metrics, shown)

    def answer_logliks(self, prompt_ids, chains, answers, scored: list[int]) -> list[float]:
        """S_i = log pi(a*|x, c_i) of the generations `scored`, teacher-forced at the sampling temperature."""
        if not scored:
            return []
        cfg, n = self.config, self.args.group_size
        contexts = [prompt_ids[i] + chains[i] for i in scored]
        return completion_logprob_sums(self.policy.model, contexts, [answers[i // n] for i in scored],
                                       self.policy.tokenizer.pad_token_id, cfg.train.micro_batch_size,
                                       temperature=cfg.sampling.temperature)

    def training_batch(self, layout: dict, generation_rows: int) -> dict:
        """The batch of a `training_rows` layout: its token masks and coefficients and (beta > 0) the reference's
        log-probs; the KL covers the policy-gradient tokens, all in the first `generation_rows` rows."""
        cfg, device = self.config, self.accelerator.device
        batch = build_batch(layout["prompts"], layout["completions"], self.policy.tokenizer.pad_token_id, device,
                            group_size=self.args.group_size, grouped_rows=generation_rows)
        width = batch["completion_mask"].shape[1]
        for key in ("pg_mask", "sup_mask"):
            batch[key] = token_mask(layout[key], width, device)
        batch["pg_coef"] = torch.tensor(layout["pg_coef"], device=device)
        batch["sup_coef"] = torch.tensor(layout["sup_coef"], device=device)
        batch["sampler_logp"] = token_rows(layout["sampler_logp"], batch["completion_mask"])
        batch["sampler_known"] = token_mask([(0, len(v)) for v in layout["sampler_logp"]], width, device)
        if self.needs_reference:
            generations = {k: v[:generation_rows] for k, v in batch.items()}
            ref = self.policy.reference_logprobs(generations, cfg.sampling.temperature, cfg.train.micro_batch_size)
            padding = ref.new_zeros(batch["pg_coef"].numel() - generation_rows, ref.shape[1])
            batch["ref_logp"] = torch.cat([ref, padding])
        return batch

    def step_metrics(self, samples, chains, terms, score_of, use_rl, rewards, timings: dict) -> tuple[dict, dict]:
        """(counts, metrics) of a step, summed over processes (in the same order on every process); `timings`: the
        seconds of each phase (time/generate, time/bound, time/reference), logged as they are."""
        acc, n = self.accelerator, self.args.group_size
        counts = {"num_prompts": float(total(acc, len(terms)))}
        generations = counts["num_prompts"] * n
        mean = lambda values: total(acc, sum(values)) / max(1.0, total(acc, len(values)))  # noqa: E731
        metrics = {
            "bound": mean([t["bound"] for t in terms if t["bound"] is not None]),
            "log_likelihood": mean(list(score_of.values())),
            "formatted": total(acc, sum(c is not None for c in chains)) / generations,
            "rl_prompts": total(acc, sum(use_rl)) / counts["num_prompts"],
            "completion_length": total(acc, sum(map(len, samples.completion_ids))) / generations,
            "truncated": total(acc, sum(not f for f in samples.finished)) / generations,
            **timings,
        }
        if rewards is not None:
            metrics["reward"] = total(acc, torch.nansum(rewards).item()) / generations
        return counts, metrics

    def training_rows(self, samples, chains, scored, answers, pg_coef, sup_coef) -> dict:
        """The training rows, one per generation first: prompts, completions, the spans of each completion under
        the policy gradient and under the supervised term, and their coefficients.

        policy_gradient="chain": a generation scored by the bound gets the row [x | c_i, a*], so one pass gives
        log pi(c_i|x) (policy gradient, KL) and S_i (supervised term); its own answer after the marker plays no
        part in the bound and is left out. Other generations (no marker, or RL prompts): [x | y_i].
        "generation" (the paper's update written literally): every generation is [x | y_i], and each a* under the
        supervised term gets a row [x, c_i | a*] of its own.
        """
        n, by_chain = self.args.group_size, self.args.policy_gradient == "chain"
        layout = {"prompts": [], "completions": [], "pg_mask": [], "sup_mask": [], "pg_coef": [], "sup_coef": [],
                  "sampler_logp": []}

        def add(prompt, pg_tokens, sup_tokens, pg, sup, sampler_logp=()):
            layout["prompts"].append(prompt)
            layout["completions"].append(pg_tokens + sup_tokens)
            layout["pg_mask"].append((0, len(pg_tokens)))
            layout["sup_mask"].append((len(pg_tokens), len(pg_tokens) + len(sup_tokens)))
            layout["pg_coef"].append(float(pg))
            layout["sup_coef"].append(float(sup))
            layout["sampler_logp"].append(list(sampler_logp))  # of the first tokens, those the sampler drew

        for i, generation in enumerate(samples.completion_ids):
            drawn = samples.logprobs[i]
            if by_chain and i in scored:
                chain = chains[i]
                add(samples.prompt_ids[i], chain, answers[i // n] if sup_coef[i] > 0 else [], pg_coef[i], sup_coef[i],
                    drawn[: shared_prefix(chain, generation)])
            else:
                add(samples.prompt_ids[i], generation, [], pg_coef[i], 0.0, drawn)
        if not by_chain:
            for i in sorted(i for i in scored if sup_coef[i] > 0):
                add(samples.prompt_ids[i] + chains[i], [], answers[i // n], 0.0, sup_coef[i])
        return layout

    def normalized(self, advantages: torch.Tensor, in_bound: torch.Tensor) -> torch.Tensor:
        args, n = self.args, self.args.group_size
        if args.normalize == "none" or not in_bound.any():
            return torch.where(in_bound, advantages, torch.zeros_like(advantages))
        out = torch.zeros_like(advantages)
        if args.normalize == "batch":
            chosen = advantages[in_bound].to(self.accelerator.device)
            everyone = gather(self.accelerator, chosen)
            std = float(everyone.std()) if everyone.numel() > 1 else 0.0
            out[in_bound] = normalize(advantages[in_bound], args.advantage_clip, std)
            return out
        for start in range(0, advantages.numel(), n):
            group = in_bound[start : start + n]
            if group.any():
                out[start : start + n][group] = normalize(advantages[start : start + n][group], args.advantage_clip)
        return out

    def loss(self, batch, counts):
        args, correction, cap = self.args, self.correction, self.config.sampling.correction_cap
        logp = self.policy.logprobs(batch, self.config.sampling.temperature).logp
        loss = surrogate_loss(logp, batch, counts["num_prompts"], correction, cap)
        drawn = batch["pg_mask"] * batch["sampler_known"]
        metrics = {"sampler_mismatch": sampler_mismatch(logp, batch["sampler_logp"], drawn).item()
                   / max(counts["drawn_tokens"], 1.0)}
        if self.needs_reference:
            generations = counts["num_prompts"] * args.group_size
            kl = generation_kl(logp, batch["ref_logp"], batch, args.kl_estimator, correction, cap)
            loss = loss + args.beta * kl.sum() / generations
            sampled_kl = masked_sum((logp - batch["ref_logp"]).detach(), batch["pg_mask"])  # the KL's estimate
            metrics["kl"] = (sampled_kl if args.kl_estimator == "sequence" else kl.detach().sum()).item() / generations
        return loss, metrics


def shared_prefix(a: list[int], b: list[int]) -> int:
    """How many first tokens two sequences share."""
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


def token_mask(spans: list[tuple[int, int]], width: int, device) -> torch.Tensor:
    """A (rows, width) float mask that is 1 on each row's [start, stop) completion positions."""
    positions = torch.arange(width)
    starts, stops = (torch.tensor(column).view(-1, 1) for column in zip(*spans))
    return ((positions >= starts) & (positions < stops)).float().to(device)
