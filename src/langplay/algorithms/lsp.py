"""Language Self-Play (Kuba et al. 2025, arXiv 2509.07414): LSP-Zero and LSP. Algorithm 1, line by line.

One model, two roles. The challenger writes N queries after a fixed prompt; the solver answers each G times.
    V(q_i)   = mean_j R(q_i, a_ij)                                    eq. 2
    A_Sol    = R(q_i, a_ij) - V(q_i)        (no division by the std)
    A_Ch     = Vbar - V(q_i)                                          eq. 3  (hard queries are good queries)
    L_Sol    = -1/(NG) sum_ij [ A_Sol pi/sg(pi) - beta log(pi(a|q) / pi_Ref(a|q)) ]          eq. 4
    L_Ch     = -1/N    sum_i  [ A_Ch  pi/sg(pi) - beta log(pi_Ch(q) / pi_Ref(q|<cp>)) ]      eq. 5
    L        = L_Sol + alpha_Ch L_Ch, one gradient step.
LSP adds the quality self-reward R_Q (0..7) of the frozen reference model as judge: the solver's reward becomes
R + R_Q, the challenger's -V(q_i) + V_Q(q_i); advantages are taken after adding it.

Where the paper is silent (our defaults, all in config.LSPConfig):
- log pi of a sequence: the mean over its tokens (`logprob_reduction="mean"`, like TRL's token-level GRPO that
  the paper's baseline used); "sum" follows eq. 4-5 literally.
- alpha_Ch = 1; G = 4 answers per query; R and R_Q are added unscaled (`self_reward_weight=1`).
- The KL term is the plain log-ratio of the sampled sequence (k1), as in eq. 4-5, for both roles. Written so,
  its gradient is beta * grad log pi(a) for sampled a, which is zero in expectation: it does not pull the policy
  towards the reference (in tinyworld the solver's KL grew to 1-3 nats within 100 steps at lr 1e-4).
  `kl_penalty="reward"` moves the same term into the advantage, A - beta * sg(log pi/pi_Ref), whose expected
  gradient is the gradient of KL(pi || pi_Ref) (the usual "KL in the reward" of RLHF). "loss" stays the default:
  it is the paper's equation.
- Queries that are empty or overlong (cut at max_query_tokens) are kept: they are answered, scored and trained
  on like any other, so the challenger learns to avoid them.
- `query_prefix` (not in the paper) starts the challenger's reply with fixed text, e.g. "What is the largest of":
  Box 1's {task} and {template} steer an instruction-following model to one kind of task; a small model that knows
  only one challenger prompt is steered by the start of its reply instead. The query is the prefix plus what the
  challenger writes; the challenger's loss and KL cover only what it wrote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from langplay.algorithms import Experience, gather_sum
from langplay.losses import sequence_logprob
from langplay.policy import build_batch
from langplay.rewards import build_scorer, call_scorer, import_function
from langplay.rewards.self_judge import ReferenceJudge
from langplay.sampling.hf import key_of

# Box 1 of the paper (reference/lsp.md), written out; {task} and {template} are filled from the config.
CHALLENGER_PROMPT = """Background: a language task is an (input, output) tuple: an agent reads the input and writes \
the output.
Request: generate an input for the language task '{task}' that will be passed to another language agent. The input \
can be easy, intermediate, hard or noisy: it should stress-test the agent. Fill the template below between \
[Start Generation] and [End Generation]. Do not generate an output, hints or any information that leaks the answer; \
do not request actions a language agent cannot perform; stop as soon as the template is fulfilled. If the task and \
the template are empty, generate an input by your best judgment.
Template: {template}
[Start Generation]"""


@dataclass
class Query:
    text: str
    ids: list[int]
    prompt_ids: list[int]
    finished: bool  # False: cut at max_query_tokens
    logprobs: list[float]  # the sampler's, i.e. the current policy's (on-policy)


class LSP:
    name = "lsp"
    needs_reference = True  # the KL of both roles; and in LSP, the judge

    def __init__(self, config, policy, sampler, accelerator, rewards=None):
        self.config, self.policy, self.sampler, self.accelerator = config, policy, sampler, accelerator
        self.args = config.lsp
        self.reward = build_scorer(self.args.rewards, rewards)
        self.self_reward = None
        if self.args.self_reward:
            function = self.args.self_reward_function
            self.self_reward = import_function(function) if function else ReferenceJudge(policy, self.args.judge_max_new_tokens)
        self.query_check = import_function(self.args.query_check) if self.args.query_check else None
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
        # 4. Rewards, values, advantages (over the global batch of queries).
        raw = [q.text for q in queries for _ in range(g)]
        prompts = [p for p in solver_prompts for _ in range(g)]
        reward = torch.tensor(call_scorer(self.reward, prompts, answers.texts, {"raw_prompt": raw}))
        quality = torch.zeros_like(reward)
        if self.self_reward is not None:
            getattr(self.self_reward, "outcomes", {}).clear()
            quality = torch.tensor(call_scorer(self.self_reward, prompts, answers.texts, {"raw_prompt": raw}))
        scored = time.perf_counter()
        everything = self.gather(torch.stack([reward, quality], 1)).to(torch.float32)
        R, RQ = everything[:, 0].view(-1, g), everything[:, 1].view(-1, g)
        V, VQ = R.mean(1), RQ.mean(1)  # eq. 2, and its quality twin
        solver_reward = R + args.self_reward_weight * RQ
        solver_adv = (solver_reward - solver_reward.mean(1, keepdim=True)).reshape(-1)  # R - V(q) (+ R_Q - V_Q)
        challenger_reward = -V + args.self_reward_weight * VQ
        challenger_adv = challenger_reward - challenger_reward.mean()  # eq. 3: Vbar - V(q_i) (+ V_Q(q_i) - mean)
        n_mine = len(queries)
        mine = slice(acc.process_index * n_mine, (acc.process_index + 1) * n_mine)
        mine_g = slice(acc.process_index * n_mine * g, (acc.process_index + 1) * n_mine * g)

        # Solver rows (N_local * G), then challenger rows (N_local): one batch, a role per row.
        prompt_ids = answers.prompt_ids + [q.prompt_ids for q in queries]
        completion_ids = answers.completion_ids + [q.ids for q in queries]
        batch = build_batch(prompt_ids, completion_ids, self.policy.tokenizer.pad_token_id, acc.device)
        batch["advantages"] = torch.cat([solver_adv[mine_g], challenger_adv[mine]]).to(acc.device)
        batch["is_challenger"] = torch.cat([torch.zeros(n_mine * g), torch.ones(n_mine)]).to(acc.device)
        batch["ref_logp"] = self.policy.reference_logprobs(batch, cfg.sampling.temperature, cfg.train.micro_batch_size)
        n_queries = float(V.numel())
        # KL per role, from the sampler's log-probs (those of the current policy: one update per batch)
        sampler_logp = torch.zeros_like(batch["ref_logp"])
        for i, row in enumerate(answers.logprobs + [q.logprobs for q in queries]):
            sampler_logp[i, : len(row)] = torch.tensor(row)
        kl = sequence_logprob(sampler_logp - batch["ref_logp"], batch["completion_mask"], args.logprob_reduction)
        kl_solver = gather_sum(acc, kl[: n_mine * g].sum()) / (n_queries * g)
        kl_challenger = gather_sum(acc, kl[n_mine * g :].sum()) / n_queries
        counts = {"solver_sequences": n_queries * g, "challenger_sequences": n_queries}
        metrics = {
            "reward": R.mean().item(),
            "solver/reward": solver_reward.mean().item(),
            "solver/advantage_abs": solver_adv.abs().mean().item(),
            "challenger/reward": challenger_reward.mean().item(),
            "challenger/advantage_abs": challenger_adv.abs().mean().item(),
            "value_spread": V.std().item() if V.numel() > 1 else 0.0,
            "kl/solver": kl_solver,
            "kl/challenger": kl_challenger,
            "query_length": gather_sum(acc, sum(len(q.ids) for q in queries)) / n_queries,
            "query_truncated": gather_sum(acc, sum(not q.finished for q in queries)) / n_queries,
            "answer_length": gather_sum(acc, sum(map(len, answers.completion_ids))) / (n_queries * g),
            "time/generate": generated - started,
            "time/reward": scored - generated,
            "time/reference": time.perf_counter() - scored,
        }
        if self.self_reward is not None:
            metrics["self_reward"] = RQ.mean().item()
            for outcome, count in getattr(self.self_reward, "outcomes", {}).items():
                metrics[f"self_reward_parse/{outcome}"] = float(count)
        if self.query_check is not None:
            valid = sum(bool(v) for v in self.query_check([q.text for q in queries]))
            metrics["valid_queries"] = gather_sum(acc, valid) / n_queries
        shown = [
            {"query": queries[i // g].text, "answer": answers.texts[i], "reward": reward[i].item(),
             "quality": quality[i].item(), "query_advantage": challenger_adv[mine][i // g].item()}
            for i in range(0, min(cfg.run.samples_per_step * g, len(answers)), g)
        ]
        return Experience(batch, counts, metrics, shown)

    def sample_queries(self, seeds: list[int]) -> list[Query]:
        """N_local queries after the challenger prompt, one per keyed seed (empty and overlong ones included)."""
        prefix = self.args.query_prefix
        prompts = [self.challenger_text + prefix] * len(seeds)
        samples = self.sampler.generate(prompts, 1, seeds, self.args.max_query_tokens)
        return [Query(prefix + text, *fields) for text, *fields in zip(
            samples.texts, samples.completion_ids, samples.prompt_ids, samples.finished, samples.logprobs)]

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        acc = self.accelerator
        return acc.gather(tensor.to(acc.device)).cpu() if acc.num_processes > 1 else tensor

    # -- Algorithm 1, step 5: eq. 4 + alpha_Ch eq. 5 -----------------------------------------------------------
    def loss(self, batch, counts):
        args = self.args
        mask = batch["completion_mask"]
        logp = self.policy.logprobs(batch, self.config.sampling.temperature).logp
        seq_logp = sequence_logprob(logp, mask, args.logprob_reduction)
        seq_ref = sequence_logprob(batch["ref_logp"], mask, args.logprob_reduction)
        ratio = torch.exp(seq_logp - seq_logp.detach())  # pi / sg(pi): 1, with gradient grad log pi
        log_ratio = seq_logp - seq_ref  # log(pi / pi_Ref)
        if args.kl_penalty == "loss":  # eq. 4-5 as written
            per_sequence = -(ratio * batch["advantages"] - args.beta * log_ratio)
        else:  # the KL as a penalty on the advantage: its expected gradient is grad KL(pi || pi_Ref)
            per_sequence = -ratio * (batch["advantages"] - args.beta * log_ratio.detach())
        challenger = batch["is_challenger"]
        weight = (1 - challenger) / counts["solver_sequences"] + challenger * args.alpha_challenger / counts["challenger_sequences"]
        return (weight * per_sequence).sum(), {}
