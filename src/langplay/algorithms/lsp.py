"""Language Self-Play (Kuba et al. 2025, arXiv 2509.07414): LSP-Zero and LSP. Algorithm 1, line by line.

One model, two roles. The challenger writes N queries after a fixed prompt; the solver answers each G times.
    V(q_i)   = mean_j R(q_i, a_ij)                                    eq. 2
    A_Sol    = R(q_i, a_ij) - V(q_i)        (no division by the std)
    A_Ch     = Vbar - V(q_i)                                          eq. 3  (hard queries are good queries)
    L_Sol    = -1/(NG) sum_ij [ A_Sol pi/sg(pi) - beta log(pi(a|q) / pi_Ref(a|q)) ]          eq. 4
    L_Ch     = -1/N    sum_i  [ A_Ch  pi/sg(pi) - beta log(pi_Ch(q) / pi_Ref(q|<cp>)) ]      eq. 5
    L        = L_Sol + alpha_Ch L_Ch, one gradient step.
LSP adds the quality self-reward R_Q (0..7) of the frozen reference model as judge (or of a judge served over HTTP,
`lsp.self_reward_url`): the solver's reward becomes R + R_Q, the challenger's -V(q_i) + V_Q(q_i); advantages are
taken after adding it.

Where the paper is silent (our defaults, all in config.LSPConfig):
- log pi of a sequence in the policy-gradient term: the mean over its tokens (`logprob_reduction="mean"`), so
  each sequence weighs the same however long it is: TRL's `grpo` loss type (a sequence mean of token means),
  which favours short answers for A > 0 and long ones for A < 0; "sum" follows eq. 4-5 literally.
- The KL (`kl_penalty="reward"`): beta KL(pi || pi_Ref) of whole sequences, for both roles, as a per-token
  penalty in the reward with its reward-to-go (losses.kl_reward_to_go), reduced like the policy gradient: under
  "sum" its expected gradient is exactly beta grad KL; under "mean" each sequence's bracket of eq. 4-5, A and KL
  alike, is divided by |a|, so the KL weighs against the learning signal as eq. 4-5 say whatever the reduction
  (tests/test_lsp.py enumerates every sequence of a tiny policy; a KL left summed under "mean" would weigh |a|
  times too much). Eq. 4-5 put beta log(pi/pi_Ref) of the sampled sequence in the loss as it is
  (`kl_penalty="loss"`): its gradient is beta grad log pi(a), zero in expectation under "sum", and beta
  grad E[1/|a|] (a push to longer outputs, not to the reference) under "mean". The paper relies on the KL to keep
  queries sane, so the default regularises.
- Queries and answers drawn by a sampler other than the trainer (vLLM, bf16) are corrected as GRPO's are
  (`sampling.correction`, tis by default under vLLM): each token's score function, in the policy gradient and in
  the KL's reward-to-go, is weighed by min(pi / pi_sampler, cap): exact for one-token draws, most of the bias
  removed otherwise (the prefix and the KL's later tokens were still drawn by the sampler). The KL metrics come
  from the trainer's log-probs.
- alpha_Ch = 1; G = 4 answers per query; R and R_Q are added unscaled (`self_reward_weight=1`).
- A judge reply with no readable score (R_Q NaN) is left out: V_Q is the mean of the readable scores of the
  query, and the unreadable answer gets V_Q (no quality advantage); the failures are counted.
- `judge="digits"` (not in the paper) reads R_Q from the reference's next-token probabilities of the scores 0..7
  after "<Score>" (an expected score, one forward pass, never unreadable) instead of parsing the reply it writes:
  on SmolLM2-135M the written replies are unreadable and the digits do not discriminate either
  (results/smollm2_lsp_game.md): a judge needs a larger model.
- Queries that are empty or overlong (cut at max_query_tokens) are kept: they are answered, scored and trained
  on like any other, so the challenger learns to avoid them.
- `query_prefix` (not in the paper) starts the challenger's reply with fixed text, e.g. "What is the largest of":
  Box 1's {task} and {template} steer an instruction-following model to one kind of task; a small model that knows
  only one challenger prompt is steered by the start of its reply instead. The query is the prefix plus what the
  challenger writes; the challenger's loss and KL cover only what it wrote.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch

from langplay.algorithms import Experience, sampler_correction
from langplay.distributed import gather, local_slice, total
from langplay.losses import (corrected_policy_loss, correction_weights, kl_reward_to_go, masked_sum,
                             sampler_mismatch)
from langplay.batch import build_batch, token_rows
from langplay.rewards import FunctionScorer, build_scorer, import_function
from langplay.rewards.http_judge import http_self_reward
from langplay.rewards.self_judge import DigitJudge, ReferenceJudge
from langplay.sampling.keys import key_of

# Box 1 of the paper, every instruction kept; {task} and {template} are filled from the config.
CHALLENGER_PROMPT = """Background: a language task is an (input, output) tuple. A language agent reads the input \
and writes the output. For example, for the task 'translate English to French' an input is "Good morning, my \
friend."; for the task 'summarise a paragraph' an input is a paragraph.
Request: generate an input for the language task '{task}'. The input will be passed to another language agent, \
so your reply MUST be a valid input for that task. It can be easy, intermediate, hard, or simply noisy: it is \
meant to stress-test the agent or push it to think outside the box. Generate only a single example.
Copy the template given between [Start Generation] and [End Generation], without those tags, and fill its \
placeholders in curly braces with your own content (for example, replace {{ice cream flavor}} with the name of \
a flavour).
Final remarks: do not generate an output or a response, hints, or any information that leaks the answer with \
the input; do not request anything a language agent cannot do; stop as soon as the template is fulfilled; your \
reply must NOT contain the [Start Generation] and [End Generation] tags. Follow the template strictly, unless \
the task and the template are both empty: then generate an input by your best judgment.
[Start Generation] '{template}' [End Generation]"""


# What makes a query one self-contained instruction, as Box 1 asks: none of Box 1's tags or unfilled {placeholders},
# no markup tags, no output or answer given with it, one input only, and no echo of Box 1's own wording.
_QUERY_FLAWS = re.compile(
    r"start generation|end generation|\{[^{}]*\}|</?\s*[a-z][a-z _-]*>|^\s*(?:output|answer|response|solution)\s*:"
    r"|language (?:task|agent)|(?:input|example|query)\s*#?\s*2\b",
    re.IGNORECASE | re.MULTILINE)


def well_formed_queries(queries: list[str]) -> list[bool]:
    """Whether each query is one self-contained instruction (at least 3 words, no flaw of _QUERY_FLAWS); usable as
    lsp.query_check="langplay.algorithms.lsp:well_formed_queries". A query cut at max_query_tokens is counted apart
    (the query_truncated metric)."""
    return [len(q.split()) >= 3 and _QUERY_FLAWS.search(q) is None for q in queries]


# -- the paper's arithmetic (pure functions) --------------------------------------------------------------------
def lsp_advantages(R: torch.Tensor, RQ: torch.Tensor, weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Values and advantages of one step from rewards R and quality scores R_Q, both (N queries, G answers).

    V(q_i) = mean_j R (eq. 2); A_Sol = (R + w R_Q) - mean_j (R + w R_Q); A_Ch = c_i - mean_i c_i with
    c_i = -V(q_i) + w V_Q(q_i) (eq. 3: Vbar - V(q_i) in LSP-Zero, where R_Q = 0). NaN in R_Q (a judge reply
    with no readable score) is left out: V_Q averages the readable scores, and a NaN answer gets V_Q (no
    quality advantage); a query with no readable score gets the mean V_Q of the others (0 if none).
    """
    readable = ~torch.isnan(RQ)
    per_query = readable.sum(1)
    VQ = torch.where(readable, RQ, torch.zeros_like(RQ)).sum(1) / per_query.clamp(min=1)
    if (per_query == 0).any():
        fill = VQ[per_query > 0].mean() if (per_query > 0).any() else torch.tensor(0.0)
        VQ = torch.where(per_query > 0, VQ, fill)
    RQ = torch.where(readable, RQ, VQ.unsqueeze(1))
    V = R.mean(1)
    solver_reward = R + weight * RQ
    challenger_reward = -V + weight * VQ
    return {"V": V, "VQ": VQ, "solver_reward": solver_reward, "challenger_reward": challenger_reward,
            "solver": (solver_reward - solver_reward.mean(1, keepdim=True)).reshape(-1),
            "challenger": challenger_reward - challenger_reward.mean()}


def sequence_loss(logp, ref_logp, mask, advantages, beta: float, kl_penalty: str = "reward",
                  reduction: str = "mean", sampler_logp=None, correction: str = "none", cap: float = 3.0) -> torch.Tensor:
    """Per sequence: -A pi/sg(pi) + beta KL term, the bracket of eq. 4 (solver) or eq. 5 (challenger), over the
    sequence's tokens summed or averaged (`reduction`); tokens drawn by a sampler other than the trainer are
    corrected (`correction`: losses.corrected_policy_loss for the policy gradient, correction_weights for the KL).

    kl_penalty "reward": beta kl_reward_to_go, whose expected gradient is beta grad KL(pi || pi_Ref) of whole
    sequences, reduced like the policy gradient (divided by |a| under "mean"): the KL's weight relative to the
    learning signal is then eq. 4-5's under either reduction. "loss": beta log(pi/pi_Ref) of the sampled sequence,
    with the reduction, as eq. 4-5 write it.
    """
    sampler_logp = logp.detach() if sampler_logp is None else sampler_logp
    length = mask.sum(1).clamp(min=1) if reduction == "mean" else 1.0
    policy_gradient = masked_sum(corrected_policy_loss(logp, sampler_logp, advantages, correction, cap), mask, 1)
    if kl_penalty == "loss":
        kl = masked_sum(logp - ref_logp, mask, 1)
    else:
        kl = kl_reward_to_go(logp, ref_logp, mask, correction_weights(logp, sampler_logp, correction, cap))
    return (policy_gradient + beta * kl) / length


def role_weights(is_challenger: torch.Tensor, counts: dict, alpha_challenger: float) -> torch.Tensor:
    """1/(NG) for solver rows (eq. 4), alpha_Ch/N for challenger rows (eq. 5): L = L_Sol + alpha_Ch L_Ch."""
    return ((1 - is_challenger) / counts["solver_sequences"]
            + is_challenger * alpha_challenger / counts["challenger_sequences"])


@dataclass
class Query:
    text: str
    ids: list[int]
    prompt_ids: list[int]
    finished: bool  # False: cut at max_query_tokens
    logprobs: list[float]  # the sampler's (the trainer's own under sampling.backend=hf)


def self_reward_scorer(config, policy):
    """R_Q's judge: a user's function, an endpoint serving a judge model, or the frozen reference model (Box 3),
    writing its reply or read from its score digits' probabilities (lsp.judge)."""
    args = config.lsp
    if args.self_reward_function:
        return FunctionScorer(import_function(args.self_reward_function))
    if args.self_reward_url:
        return http_self_reward(args.self_reward_url, args.self_reward_model, config.http_judge,
                                max_tokens=args.judge_max_new_tokens)
    if args.judge == "digits":
        return DigitJudge(policy)
    return ReferenceJudge(policy, args.judge_max_new_tokens, sampling=config.sampling)


class LSP:
    name = "lsp"
    needs_reference = True  # the KL of both roles; and in LSP, the judge
    generates = True

    @classmethod
    def data_columns(cls, config) -> None:
        return None  # no data: the challenger writes the prompts

    def __init__(self, config, policy, sampler, accelerator, rewards=None):
        self.config, self.policy, self.sampler, self.accelerator = config, policy, sampler, accelerator
        self.args = config.lsp
        self.reward = build_scorer(self.args.rewards, rewards, config.http_judge)
        self.self_reward = self_reward_scorer(config, policy) if self.args.self_reward else None
        self.query_check = import_function(self.args.query_check) if self.args.query_check else None
        self.correction = sampler_correction(config)
        text = self.args.challenger_prompt or CHALLENGER_PROMPT.format(task=self.args.task, template=self.args.template)
        self.challenger_text = policy.format_prompt(text)

    # -- Algorithm 1, steps 2-4 -------------------------------------------------------------------------------
    def collect(self, rows: list[dict], seeds: list[int]) -> Experience:
        cfg, args, acc, g = self.config, self.args, self.accelerator, self.args.group_size
        started = time.perf_counter()
        # 2. The challenger samples this process's share of the N queries (one keyed seed per query slot).
        queries = self.sample_queries(seeds)
        # 3. The solver samples G answers per query, the query given as an ordinary user turn.
        solver_prompts = [self.policy.format_prompt(q.text) for q in queries]
        answers = self.sampler.generate(solver_prompts, g, [key_of(seed, 1) for seed in seeds])
        generated = time.perf_counter()
        # 4. Rewards (and R_Q), values, advantages, over the global batch of queries.
        reward, quality, score_metrics = self.score(queries, solver_prompts, answers)
        scored = time.perf_counter()
        everything = gather(acc, torch.stack([reward, quality], 1)).to(torch.float32)
        R, RQ = everything[:, 0].view(-1, g), everything[:, 1].view(-1, g)
        adv = lsp_advantages(R, RQ, args.self_reward_weight)
        # Solver rows (N_local * G), then challenger rows (N_local): one batch, a role per row.
        n = len(queries)
        batch = build_batch(answers.prompt_ids + [q.prompt_ids for q in queries],
                            answers.completion_ids + [q.ids for q in queries], self.policy.tokenizer.pad_token_id,
                            acc.device, group_size=g, grouped_rows=n * g)
        challenger_adv = adv["challenger"][local_slice(acc, n)]
        batch["advantages"] = torch.cat([adv["solver"][local_slice(acc, n * g)], challenger_adv]).to(acc.device)
        batch["is_challenger"] = torch.cat([torch.zeros(n * g), torch.ones(n)]).to(acc.device)
        batch["sampler_logp"] = token_rows(answers.logprobs + [q.logprobs for q in queries], batch["completion_mask"])
        batch["ref_logp"] = self.policy.reference_logprobs(batch, cfg.sampling.temperature, cfg.train.micro_batch_size)
        counts = {"solver_sequences": float(R.numel()), "challenger_sequences": float(R.shape[0]),
                  "num_tokens": total(acc, batch["completion_mask"].sum())}
        metrics = {**self.step_metrics(queries, answers, adv, R, RQ), **score_metrics,
                   "time/generate": generated - started, "time/reward": scored - generated,
                   "time/reference": time.perf_counter() - scored}
        shown = [{"query": queries[i // g].text, "answer": answers.texts[i], "reward": reward[i].item(),
                  "quality": quality[i].item(), "query_advantage": challenger_adv[i // g].item()}
                 for i in range(0, min(cfg.run.samples_per_step * g, len(answers)), g)]
        return Experience(batch, counts, metrics, shown)

    def score(self, queries: list[Query], solver_prompts: list[str], answers) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """R(q, a) and R_Q(q, a) (zeros in LSP-Zero) of every answer, with the scorers' metrics."""
        g = self.args.group_size
        prompts = [p for p in solver_prompts for _ in range(g)]
        columns = {"raw_prompt": [q.text for q in queries for _ in range(g)], "finished": list(answers.finished)}
        values, metrics = self.reward.score(prompts, answers.texts, columns)
        reward = torch.tensor(values)
        if self.self_reward is None:
            return reward, torch.zeros_like(reward), metrics
        quality, judge_metrics = self.self_reward.score(prompts, answers.texts, columns)
        return reward, torch.tensor(quality), {**metrics, **judge_metrics}

    def step_metrics(self, queries: list[Query], answers, adv: dict, R, RQ) -> dict:
        """What a step logs: rewards and advantages per role, lengths, the judge's and the queries' validity (the
        KL per role and the sampler mismatch come from the training pass, `loss`)."""
        acc, g, n_queries = self.accelerator, self.args.group_size, float(R.shape[0])
        metrics = {
            "reward": R.mean().item(),
            "solver/reward": adv["solver_reward"].mean().item(),
            "solver/advantage_abs": adv["solver"].abs().mean().item(),
            "challenger/reward": adv["challenger_reward"].mean().item(),
            "challenger/advantage_abs": adv["challenger"].abs().mean().item(),
            "value_spread": adv["V"].std().item() if adv["V"].numel() > 1 else 0.0,
            "query_length": total(acc, sum(len(q.ids) for q in queries)) / n_queries,
            "query_truncated": total(acc, sum(not q.finished for q in queries)) / n_queries,
            "answer_length": total(acc, sum(map(len, answers.completion_ids))) / (n_queries * g),
        }
        if self.self_reward is not None:
            metrics["self_reward"] = RQ.nanmean().item() if (~RQ.isnan()).any() else float("nan")
            metrics["self_reward_unreadable"] = RQ.isnan().float().mean().item()
        if self.query_check is not None:
            valid = sum(bool(v) for v in self.query_check([q.text for q in queries]))
            metrics["valid_queries"] = total(acc, valid) / n_queries
        return metrics

    def sample_queries(self, seeds: list[int]) -> list[Query]:
        """N_local queries after the challenger prompt, one per keyed seed (empty and overlong ones included)."""
        prefix = self.args.query_prefix
        prompts = [self.challenger_text + prefix] * len(seeds)
        samples = self.sampler.generate(prompts, 1, seeds, self.args.max_query_tokens)
        return [Query(text=prefix + samples.texts[i], ids=samples.completion_ids[i], prompt_ids=samples.prompt_ids[i],
                      finished=samples.finished[i], logprobs=samples.logprobs[i]) for i in range(len(samples))]

    # -- Algorithm 1, step 5: eq. 4 + alpha_Ch eq. 5 -----------------------------------------------------------
    def loss(self, batch, counts):
        args, mask = self.args, batch["completion_mask"]
        logp = self.policy.logprobs(batch, self.config.sampling.temperature).logp
        per_sequence = sequence_loss(logp, batch["ref_logp"], mask, batch["advantages"], args.beta, args.kl_penalty,
                                     args.logprob_reduction, batch["sampler_logp"], self.correction,
                                     self.config.sampling.correction_cap)
        loss = (role_weights(batch["is_challenger"], counts, args.alpha_challenger) * per_sequence).sum()
        # The KL of each role in nats per sequence, from the trainer's log-probs (the sampler's would report the
        # gap between sampler and trainer): this micro-batch's share of the step's means.
        kl = masked_sum((logp - batch["ref_logp"]).detach(), mask, 1)
        challenger = batch["is_challenger"]
        metrics = {"kl/solver": ((1 - challenger) * kl).sum().item() / counts["solver_sequences"],
                   "kl/challenger": (challenger * kl).sum().item() / counts["challenger_sequences"],
                   "sampler_mismatch": sampler_mismatch(logp, batch["sampler_logp"], mask).item() / counts["num_tokens"]}
        return loss, metrics
