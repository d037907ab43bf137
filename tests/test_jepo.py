"""JEPO: the estimators against exact enumeration, advantages and masks by hand, the marker, answer formats, a CLI run."""

import itertools
import json
import math
import statistics
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from langplay.algorithms.jepo import JEPO, bound_advantages, chain_ids, leave_one_out_log_mean_exp, normalize
from enumeration import assert_corrected_is_on_policy, sampler_near
from langplay.config import load_config
from langplay.policy import Policy
from langplay.rewards.verifiers import boxed_answer, gold_answer, math_match
from langplay.sampling import Samples

GSM8K = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"


# -- exact enumeration on a tiny parameterised policy ------------------------------------------------------------
class TinyLatentModel(torch.nn.Module):
    """pi(c|x) over chains c of length 1 or 2 on a 2-token vocabulary (plus a stop), and pi(a*|x, c).

    c1 ~ softmax(first); then stop or c2 ~ softmax(second[c1]); a* is the answer with probability
    sigmoid(answer[chain]). Six chains in all: every expectation can be summed exactly.
    """

    CHAINS = [(0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1)]

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.first = torch.nn.Parameter(torch.randn(2, generator=g, dtype=torch.float64))
        self.second = torch.nn.Parameter(torch.randn(2, 3, generator=g, dtype=torch.float64))  # [stop, 0, 1]
        self.answer = torch.nn.Parameter(torch.randn(6, generator=g, dtype=torch.float64) * 2)

    def chain_logprobs(self) -> torch.Tensor:
        first, second = self.first.log_softmax(0), self.second.log_softmax(1)
        return torch.stack([first[c[0]] + (second[c[0], 0] if len(c) == 1 else second[c[0], 1 + c[1]])
                            for c in self.CHAINS])

    def answer_logprobs(self) -> torch.Tensor:
        return torch.nn.functional.logsigmoid(self.answer)


def exact_bound(model, n):
    """L_n = E_{c_1..c_n}[log (1/n) sum_i pi(a*|c_i)], summed over all 6^n tuples of chains."""
    logp_c, logp_a = model.chain_logprobs(), model.answer_logprobs()
    total = 0
    for tuple_ in itertools.product(range(6), repeat=n):
        index = torch.tensor(tuple_)
        total = total + logp_c[index].sum().exp() * (torch.logsumexp(logp_a[index], 0) - math.log(n))
    return total


def estimator_gradients(model, n, estimator, draws, batches):
    """`batches` independent means of the JEPO gradient estimate, each over `draws` groups of n chains."""
    g = torch.Generator().manual_seed(1)
    means = []
    for _ in range(batches):
        model.zero_grad()
        logp_c, logp_a = model.chain_logprobs(), model.answer_logprobs()
        chains = torch.multinomial(logp_c.detach().exp(), draws * n, replacement=True, generator=g).view(draws, n)
        scores = logp_a[chains]
        # per group: advantages and weights held constant, as in training
        terms = [bound_advantages(group, estimator) for group in scores.detach()]
        advantages, weights = torch.stack([a for a, _ in terms]), torch.stack([w for _, w in terms])
        surrogate = (advantages * logp_c[chains]).sum() / n + (weights * scores).sum()
        (surrogate / draws).backward()
        means.append(torch.cat([p.grad.flatten() for p in model.parameters()]).clone())
    return torch.stack(means)


def exact_gradient(model, n):
    model.zero_grad()
    exact_bound(model, n).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()]).clone()


@pytest.mark.parametrize("estimator,n", [("single", 2), ("single", 4), ("multi", 2), ("multi", 4)])
def test_estimators_are_unbiased_for_the_exact_bound_gradient(estimator, n):
    model = TinyLatentModel()
    target = exact_gradient(model, 1 if estimator == "single" else n)  # the single-sample estimator targets L_1
    samples = estimator_gradients(model, n, estimator, draws=400, batches=40)
    mean, error = samples.mean(0), samples.std(0) / math.sqrt(len(samples))
    assert torch.all((mean - target).abs() <= 4 * error + 1e-3), (mean - target) / error
    assert torch.allclose(mean, target, atol=0.05, rtol=0.1)


def test_estimator_check_can_fail():
    """The multi-sample estimator is *not* unbiased for L_1's gradient: the check above tells them apart."""
    model = TinyLatentModel()
    samples = estimator_gradients(model, 3, "multi", draws=400, batches=40)
    mean, error = samples.mean(0), samples.std(0) / math.sqrt(len(samples))
    assert not torch.all((mean - exact_gradient(model, 1)).abs() <= 4 * error + 1e-3)


def test_bounds_are_ordered_exactly():
    for seed in range(5):
        model = TinyLatentModel(seed)
        with torch.no_grad():
            evidence = torch.logsumexp(model.chain_logprobs() + model.answer_logprobs(), 0)  # log pi(a*|x)
            bounds = [exact_bound(model, n) for n in (1, 2, 3)]
        assert bounds[0] <= bounds[1] <= bounds[2] <= evidence
        assert bounds[2] < evidence  # strict here: the answer's likelihood depends on the chain


# -- advantages, weights, normalisation by hand ----------------------------------------------------------------
def test_bound_advantages_by_hand():
    scores = torch.tensor([0.0, math.log(2.0), math.log(4.0)], dtype=torch.float64)
    single, w1 = bound_advantages(scores, "single")
    assert torch.allclose(single, scores - torch.tensor([(math.log(2) + math.log(4)) / 2, math.log(4) / 2,
                                                         math.log(2) / 2], dtype=torch.float64))
    assert torch.allclose(w1, torch.full((3,), 1 / 3, dtype=torch.float64))
    multi, w = bound_advantages(scores, "multi")
    lme = math.log(7 / 3)
    others = [math.log(6 / 2), math.log(5 / 2), math.log(3 / 2)]
    assert torch.allclose(multi, 3 * (lme - torch.tensor(others, dtype=torch.float64)))
    assert torch.allclose(w, torch.tensor([1 / 7, 2 / 7, 4 / 7], dtype=torch.float64))
    assert torch.allclose(leave_one_out_log_mean_exp(scores), torch.tensor(others, dtype=torch.float64))
    # one sample: no baseline, no advantage; the supervised term still applies
    lone, weight = bound_advantages(scores[:1], "multi")
    assert lone.item() == 0 and weight.item() == 1


def test_normalize_clips_and_handles_constant_groups():
    out = normalize(torch.tensor([3.0, -1.0, -1.0, -1.0]), clip=1.0)
    assert torch.allclose(out, torch.tensor([1.0, -0.5, -0.5, -0.5]))
    assert torch.equal(normalize(torch.tensor([2.0, 2.0]), clip=1.0), torch.zeros(2))
    assert torch.allclose(normalize(torch.tensor([1.0, -1.0]), clip=None, std=0.5), torch.tensor([2.0, -2.0]))


# -- the marker --------------------------------------------------------------------------------------------------
class WordTokenizer:
    """Whole pieces as tokens, so a token can straddle the marker's end."""

    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.pieces[i] for i in ids)

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.pieces.index(ch) for ch in text]}  # single characters only


def test_chain_ends_exactly_at_the_last_marker():
    pieces = list("abcdefghijklmnopqrstuvwxyz :.0123456789") + ["is 4", "The answer", " is"]
    tok = WordTokenizer(pieces)
    ids = [pieces.index(p) for p in ["The answer", " is", " ", "4", "."]]
    assert tok.decode(chain_ids(tok, ids, "the answer is")) == "The answer is"  # case-insensitive
    merged = [pieces.index("The answer"), pieces.index(" "), pieces.index("is 4"), pieces.index(".")]
    cut = chain_ids(tok, merged, "The answer is")
    assert tok.decode(cut) == "The answer is" and cut[:2] == merged[:2]  # the straddling token is re-encoded
    twice = [pieces.index(p) for p in ["The answer", " is", "4", ".", " ", "The answer", " is", " ", "5"]]
    assert tok.decode(chain_ids(tok, twice, "The answer is")) == "The answer is4. The answer is"
    assert chain_ids(tok, [pieces.index("a")], "The answer is") is None


# -- answer formats on real text ---------------------------------------------------------------------------------
def test_chain_ids_takes_text_with_a_lone_surrogate():
    """A generation or a marker holding a lone surrogate (e.g. cut from a model's output) is cut, not a TypeError."""
    from langplay.tinyworld.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    ids = tokenizer("so \ud800 The answer is 7", add_special_tokens=False)["input_ids"]
    chain = chain_ids(tokenizer, ids, "The answer is")
    assert tokenizer.decode(chain).endswith("The answer is") and len(chain) < len(ids)
    assert chain_ids(tokenizer, ids, "answer\ud800") is None


def test_gsm8k_gold_solutions_score_one_with_our_extraction():
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    assert len(rows) >= 50
    for row in rows:
        gold = gold_answer(row["answer"], "gsm8k")
        assert gold and "####" not in gold and "<<" not in gold
        assert math_match(f"Some working. The final answer is {gold}", gold) == 1.0
        assert math_match("The final answer is 123456789.5", gold) == 0.0


def test_boxed_answers_with_nested_braces():
    assert boxed_answer(r"so $\boxed{1}$ then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert gold_answer(r"x = \boxed{{a}_{b}}", "boxed") == "{a}_{b}"
    assert boxed_answer(r"\boxed{unclosed") is None
    assert math_match(r"The final answer is $\frac{1}{2}$", boxed_answer(r"\boxed{\frac{1}{2}}")) == 1.0


# -- collect: masks, format penalty, the RL switch, on a real (tiny) model ---------------------------------------
GENERATIONS = {  # prompt -> 3 generations; the answer is "7"
    "q one": ["so The answer is 7", "no marker here", "x The answer is 8"],
    "q two": ["The answer is 7", "The answer is 7", "bad"],
}


class ScriptedSampler:
    def __init__(self, policy):
        self.policy = policy

    def generate(self, prompts, n, seeds, max_new_tokens=None):
        encode, eos = self.policy.encode, self.policy.tokenizer.eos_token_id
        texts = [t for p in prompts for t in GENERATIONS[next(q for q in GENERATIONS if q in p)]]
        prompt_ids = [encode(p) for p in prompts for _ in range(n)]
        ids = [encode(t) + [eos] for t in texts]
        return Samples(prompt_ids, ids, texts, [[-1.0] * len(i) for i in ids], [True] * len(ids))


def passes_if_seven(prompts, completions, **_):
    return [float(c.strip().endswith(" 7")) for c in completions]


def make_jepo(tiny_model, *more, rewards=None):
    config = load_config(overrides=[
        "algorithm=jepo", f"model.name_or_path={tiny_model}", "jepo.group_size=3", "jepo.answer_marker=The answer is",
        "jepo.normalize=none", "jepo.beta_sup=0.5", "jepo.format_penalty=10", "train.prompts_per_step=2",
        "jepo.answer_suffix_eos=true", *more,
    ])
    policy = Policy.from_config(config.model)
    jepo = JEPO(config, policy, None, Accelerator(cpu=True), rewards=rewards)
    jepo.sampler = ScriptedSampler(policy)
    return jepo


def answer_loglik(policy, prompt, chain, answer=" 7", eos=True, temperature=1.0):
    x = policy.encode(policy.format_prompt(prompt)) + policy.encode(chain)
    target = policy.encode(answer) + ([policy.tokenizer.eos_token_id] if eos else [])
    ids = torch.tensor([x + target])
    with torch.no_grad():
        logp = (policy.model(input_ids=ids).logits / temperature).log_softmax(-1)[0, len(x) - 1 : -1]
    return logp.gather(1, torch.tensor(target)[:, None]).sum().item()


def completion_span(batch, row, mask):
    """The token ids of a row's completion where `mask` (pg_mask or sup_mask) is 1."""
    width = batch["completion_mask"].shape[1]
    return batch["input_ids"][row, -width:][batch[mask][row].bool()].tolist()


def test_collect_masks_unformatted_generations_and_penalises_them(tiny_model):
    jepo = make_jepo(tiny_model, "jepo.estimator=single")
    rows = [{"prompt": "q one", "answer": "7"}, {"prompt": "q two", "answer": "7"}]
    exp = jepo.collect(rows, [0, 1])
    batch, encode = exp.batch, jepo.policy.encode
    eos = jepo.policy.tokenizer.eos_token_id
    # prompt 1: generations 0 and 2 are formatted; 1 has no marker: out of the bound, format reward -10
    s0 = answer_loglik(jepo.policy, "q one", "so The answer is")
    s2 = answer_loglik(jepo.policy, "q one", "x The answer is")
    fmt = torch.tensor([5.0, -10.0, 5.0])  # leave-one-out of [0, -10, 0]
    bound = torch.tensor([s0 - s2, 0.0, s2 - s0])
    assert torch.allclose(batch["pg_coef"][:3], (bound + fmt) / 3, atol=1e-4)
    # one row per generation: a formatted one is [x | chain, a*], the chain under the policy gradient and
    # a* = " 7" + EOS under the supervised term (beta_sup / m, m = 2 formatted); the unformatted one is [x | y]
    assert len(batch["pg_coef"]) == 6
    assert torch.allclose(batch["sup_coef"], torch.tensor([0.25, 0, 0.25, 0.25, 0.25, 0]))
    assert completion_span(batch, 0, "pg_mask") == encode("so The answer is")
    assert completion_span(batch, 0, "sup_mask") == encode(" 7") + [eos]
    assert completion_span(batch, 1, "pg_mask") == encode("no marker here") + [eos]
    assert completion_span(batch, 1, "sup_mask") == []
    assert exp.metrics["formatted"] == pytest.approx(4 / 6)
    loss, _ = jepo.loss(batch, exp.counts)
    assert torch.isfinite(loss)


def test_generation_mode_gives_a_star_rows_of_its_own(tiny_model):
    jepo = make_jepo(tiny_model, "jepo.estimator=single", "jepo.policy_gradient=generation")
    exp = jepo.collect([{"prompt": "q one", "answer": "7"}, {"prompt": "q two", "answer": "7"}], [0, 1])
    batch, encode = exp.batch, jepo.policy.encode
    eos = jepo.policy.tokenizer.eos_token_id
    # 6 generation rows [x | y_i] (own answer included), then 4 answer rows [x, c_i | a*]
    assert len(batch["pg_coef"]) == 6 + 4
    assert completion_span(batch, 0, "pg_mask") == encode("so The answer is 7") + [eos]
    assert torch.allclose(batch["sup_coef"], torch.tensor([0.0] * 6 + [0.25] * 4))
    assert torch.all(batch["pg_coef"][6:] == 0) and completion_span(batch, 6, "sup_mask") == encode(" 7") + [eos]
    chain_mode = make_jepo(tiny_model, "jepo.estimator=single").collect(
        [{"prompt": "q one", "answer": "7"}, {"prompt": "q two", "answer": "7"}], [0, 1])
    assert torch.allclose(batch["pg_coef"][:6], chain_mode.batch["pg_coef"])  # same advantages, other tokens


def test_multi_sample_weights_follow_the_softmax_of_scores(tiny_model):
    jepo = make_jepo(tiny_model, "jepo.estimator=multi")
    exp = jepo.collect([{"prompt": "q one", "answer": "7"}], [0])
    s = torch.tensor([answer_loglik(jepo.policy, "q one", "so The answer is"),
                      answer_loglik(jepo.policy, "q one", "x The answer is")])
    assert torch.allclose(exp.batch["sup_coef"][[0, 2]], 0.5 * torch.softmax(s, 0), atol=1e-4)
    assert exp.metrics["bound"] == pytest.approx(float(torch.logsumexp(s, 0) - math.log(2)), abs=1e-4)


def test_verifier_switch_uses_rl_where_a_sample_passes(tiny_model):
    jepo = make_jepo(tiny_model, rewards=[passes_if_seven])
    exp = jepo.collect([{"prompt": "q one", "answer": "7"}, {"prompt": "q two", "answer": "7"}], [0, 1])
    coef = exp.batch["pg_coef"]
    # both prompts have a passing sample: ordinary RL on whole generations, 0/1 reward with a leave-one-out
    # baseline, nothing under the supervised term
    assert torch.allclose(coef[:3], torch.tensor([1.0, -0.5, -0.5]) / 3)
    assert torch.allclose(coef[3:6], torch.tensor([0.5, 0.5, -1.0]) / 3)
    assert len(coef) == 6 and exp.metrics["rl_prompts"] == 1.0 and not exp.batch["sup_mask"].any()
    assert completion_span(exp.batch, 0, "pg_mask") == jepo.policy.encode("so The answer is 7") + [
        jepo.policy.tokenizer.eos_token_id]


def test_loss_gradient_is_the_weighted_sum_of_sequence_logprobs(tiny_model):
    jepo = make_jepo(tiny_model, "jepo.beta=0")
    exp = jepo.collect([{"prompt": "q one", "answer": "7"}], [0])
    loss, _ = jepo.loss(exp.batch, exp.counts)
    model, batch = jepo.policy.model, exp.batch
    ours = torch.autograd.grad(loss, list(model.parameters()))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    width = batch["completion_mask"].shape[1]
    logp = logits[:, -width - 1 : -1].log_softmax(-1).gather(2, batch["input_ids"][:, -width:, None]).squeeze(2)
    chain, answer = (logp * batch["pg_mask"]).sum(1), (logp * batch["sup_mask"]).sum(1)
    expected = -(batch["pg_coef"] * chain + batch["sup_coef"] * answer).sum() / 1
    for a, b in zip(ours, torch.autograd.grad(expected, list(model.parameters()))):
        assert torch.allclose(a, b, atol=1e-5)
    # the same pass gives S_i: the a* span of a formatted row is log pi(a*|x, c_i), computed independently
    assert answer[0].item() == pytest.approx(answer_loglik(jepo.policy, "q one", "so The answer is"), abs=1e-4)


def test_defaults_follow_the_paper_s_and_normalise_the_format_advantage(tiny_model):
    """By default S_i = log pi(a*|x, c_i) without EOS, at the sampling temperature (one temperature for S and the
    surrogate), and the format advantage is normalised and clipped like the bound's (A~fmt)."""
    jepo = make_jepo(tiny_model, "jepo.estimator=single", "jepo.normalize=batch", "jepo.answer_suffix_eos=false",
                     "sampling.temperature=0.7")
    eos = jepo.policy.tokenizer.eos_token_id
    assert load_config().jepo.answer_suffix_eos is False
    exp = jepo.collect([{"prompt": "q one", "answer": "7"}, {"prompt": "q two", "answer": "7"}], [0, 1])
    assert completion_span(exp.batch, 0, "sup_mask") == jepo.policy.encode(" 7")  # no EOS after a*
    s = [answer_loglik(jepo.policy, "q one", c, eos=False, temperature=0.7) for c in ("so The answer is", "x The answer is")]
    assert exp.metrics["log_likelihood"] == pytest.approx(
        (s[0] + s[1] + 2 * answer_loglik(jepo.policy, "q two", "The answer is", eos=False, temperature=0.7)) / 4, abs=1e-4)
    # raw format advantages [5, -10, 5, 5, 5, -10]: divided by their std over the step's JEPO prompts, clipped at 1
    fmt = torch.tensor([5.0, -10, 5, 5, 5, -10])
    expected_fmt = (fmt / fmt.std()).clamp(-1, 1)
    bound_row1 = exp.batch["pg_coef"][1] * 3  # generation 1 has no marker: only its format advantage
    assert bound_row1.item() == pytest.approx(expected_fmt[1].item(), abs=1e-5)
    assert exp.batch["pg_coef"].abs().max() <= 2 / 3 + 1e-6  # |A~| + |A~fmt| <= 2, over n = 3


def kl_term_off_the_reference(jepo):
    """A step of two prompts, then JEPO's loss with and without its KL at log-probs moved off the reference's:
    (batch, log-probs, loss, loss without the KL, metrics)."""
    from types import SimpleNamespace

    exp = jepo.collect([{"prompt": "q one", "answer": "7"}, {"prompt": "q two", "answer": "7"}], [0, 1])
    batch = exp.batch
    torch.manual_seed(0)
    logp = (batch["ref_logp"] + 0.3 * torch.randn_like(batch["ref_logp"])).requires_grad_()
    jepo.policy = SimpleNamespace(logprobs=lambda b, temperature: SimpleNamespace(logp=logp))
    loss, metrics = jepo.loss(batch, exp.counts)
    jepo.args.beta = 0.0
    surrogate, _ = jepo.loss(batch, exp.counts)
    return batch, logp, loss, surrogate, metrics


def test_kl_weighs_like_a_sequence_level_kl(tiny_model):
    """k3: beta KL per generation (summed over its tokens), averaged over the step's B n generations: each token's
    KL has weight beta / (B n), as the policy gradient's chain log-prob has coef / B."""
    batch, logp, loss, surrogate, metrics = kl_term_off_the_reference(make_jepo(tiny_model, "jepo.beta=0.5",
                                                                                "jepo.kl_estimator=k3"))
    k3 = torch.exp(batch["ref_logp"] - logp) - (batch["ref_logp"] - logp) - 1
    B, n = 2, 3
    hand = 0.5 * (k3 * batch["pg_mask"]).sum() / (B * n)
    assert (loss - surrogate).item() == pytest.approx(hand.item(), rel=1e-4)
    assert metrics["kl"] == pytest.approx(((k3 * batch["pg_mask"]).sum() / (B * n)).item(), rel=1e-6)
    chain_tokens = batch["pg_mask"][0].sum().item()
    assert chain_tokens > 5  # a token mean would have divided by the step's ~40 tokens instead of 6 generations


def test_the_default_kl_is_the_sequence_kl_by_hand(tiny_model):
    """kl_estimator=sequence (the default): each policy-gradient token's log-prob times beta * the log-ratios from
    it to the end of the row, per generation, averaged over the step's B n generations; the metric is the sampled
    log-ratio, from the trainer's log-probs."""
    jepo = make_jepo(tiny_model, "jepo.beta=0.5")
    assert jepo.args.kl_estimator == "sequence"
    batch, logp, loss, surrogate, metrics = kl_term_off_the_reference(jepo)
    mask = batch["pg_mask"]
    ratio = ((logp - batch["ref_logp"]) * mask).detach()
    to_go = torch.stack([ratio[:, t:].sum(1) for t in range(ratio.shape[1])], 1)
    hand = 0.5 * (((logp - logp.detach()) * to_go * mask).sum() + ratio.sum()) / 6
    assert (loss - surrogate).item() == pytest.approx(hand.item(), rel=1e-5)
    assert metrics["kl"] == pytest.approx(ratio.sum().item() / 6, rel=1e-6)
    ours = torch.autograd.grad(loss - surrogate, logp)[0]
    assert torch.allclose(ours, torch.autograd.grad(hand, logp)[0], atol=1e-7)


def chain_tokens(model):
    """Per chain of TinyLatentModel, the log-probs of its two tokens (c1, then c2 or the stop)."""
    first, second = model.first.log_softmax(0), model.second.log_softmax(1)
    return [torch.stack([first[c[0]], second[c[0], 0] if len(c) == 1 else second[c[0], 1 + c[1]]])
            for c in TinyLatentModel.CHAINS]


def expected_kl_gradient(estimator):
    """(E_{c~pi}[grad of JEPO's KL term], grad KL(pi || pi_ref)) over the six chains, exactly, far from the
    reference."""
    from langplay.algorithms.jepo import generation_kl

    model, ref = TinyLatentModel(seed=0), TinyLatentModel(seed=3)
    with torch.no_grad():
        ref_tokens = chain_tokens(ref)
    params = list(model.parameters())
    expected = [torch.zeros_like(p) for p in params]
    batch = {"pg_mask": torch.ones(1, 2, dtype=torch.float64), "sampler_known": torch.zeros(1, 2),
             "sampler_logp": torch.zeros(1, 2, dtype=torch.float64)}
    exact = 0.0
    for logp, ref_logp in zip(chain_tokens(model), ref_tokens):
        term = generation_kl(logp.unsqueeze(0), ref_logp.unsqueeze(0), batch, estimator).sum()
        grads = torch.autograd.grad(term, params, allow_unused=True, retain_graph=True)
        for total, grad in zip(expected, grads):
            if grad is not None:
                total += logp.sum().exp().detach() * grad
        exact = exact + logp.sum().exp() * (logp.sum() - ref_logp.sum())
    true = torch.autograd.grad(exact, params, allow_unused=True)
    flat = lambda grads: torch.cat([g.flatten() for g in grads if g is not None])  # noqa: E731
    return flat(expected), flat([t if t is not None else torch.zeros_like(p) for t, p in zip(true, params)])


def test_the_sequence_kl_has_the_gradient_of_the_kl_and_k3_does_not():
    """By enumeration of every chain: the default's expected gradient is grad KL(pi || pi_ref) to float64 precision;
    k3 summed in the loss (the former default) is off by far more than rounding far from the reference."""
    expected, true = expected_kl_gradient("sequence")
    assert true.abs().max() > 0.05
    assert torch.allclose(expected, true, atol=1e-12), (expected - true).abs().max()
    k3, _ = expected_kl_gradient("k3")
    assert (k3 - true).norm() / true.norm() > 0.2


@pytest.mark.parametrize("term", ["policy_gradient", "kl"])
@pytest.mark.parametrize("correction", ["tis", "ppo"])
def test_sampler_correction_recovers_the_on_policy_gradient_by_enumeration(correction, term):
    """One-token chains drawn by a sampler q != pi: the expectation over q of JEPO's corrected loss has the
    on-policy gradient, for the policy-gradient rows and the KL; without the correction it does not."""
    from types import SimpleNamespace

    torch.manual_seed(1)
    theta = (0.5 * torch.randn(3, dtype=torch.float64)).requires_grad_()
    ref = torch.randn(3, dtype=torch.float64).log_softmax(0)
    pi = torch.softmax(theta, 0).detach()
    q = sampler_near(pi)
    coef = [1.0, -0.5, 2.0] if term == "policy_gradient" else [0.0] * 3
    jepo = JEPO.__new__(JEPO)
    jepo.config = SimpleNamespace(sampling=SimpleNamespace(temperature=1.0, correction_cap=3.0))
    jepo.args = SimpleNamespace(beta=0.0 if term == "policy_gradient" else 0.3, kl_estimator="sequence", group_size=1)
    jepo.needs_reference = term == "kl"

    def expected_gradient(correction, weights, sampler):
        jepo.correction, total = correction, 0.0
        for a in range(3):
            logp = torch.log_softmax(theta, 0)[a : a + 1].view(1, 1)
            jepo.policy = SimpleNamespace(logprobs=lambda b, temperature, logp=logp: SimpleNamespace(logp=logp))
            batch = {"pg_mask": torch.ones(1, 1), "sup_mask": torch.zeros(1, 1), "sup_coef": torch.zeros(1),
                     "pg_coef": torch.tensor([coef[a]], dtype=torch.float64), "sampler_known": torch.ones(1, 1),
                     "sampler_logp": sampler[a].log().view(1, 1), "ref_logp": ref[a].view(1, 1)}
            total = total + weights[a] * jepo.loss(batch, {"num_prompts": 1.0, "drawn_tokens": 1.0})[0]
        return torch.autograd.grad(total, theta)[0]

    assert_corrected_is_on_policy(expected_gradient, correction, pi, q)


def test_chain_rows_carry_the_sampler_s_log_probs_of_the_tokens_it_drew(tiny_model):
    """The sampler's log-probs line up with the chain's tokens; tokens it did not draw are marked unknown."""
    jepo = make_jepo(tiny_model)
    exp = jepo.collect([{"prompt": "q one", "answer": "7"}], [0])
    batch = exp.batch
    drawn = batch["pg_mask"] * batch["sampler_known"]
    assert drawn.sum() > 0 and torch.all(batch["sampler_logp"][drawn.bool()] == -1.0)  # the scripted sampler's
    assert not (batch["sup_mask"] * batch["sampler_known"]).any()  # a* is not drawn
    assert exp.counts["drawn_tokens"] == drawn.sum().item()


def test_jepo_runs_from_the_cli(tmp_path, tiny_model):
    from typer.testing import CliRunner

    from langplay.cli import app

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"say {c}", "answer": c}) + "\n" for c in "abcd"))
    result = CliRunner().invoke(app, [
        "train", "jepo", f"model.name_or_path={tiny_model}", f"data.path={data}", f"run.output_dir={tmp_path}/run",
        "train.steps=2", "train.prompts_per_step=2", "jepo.group_size=2", "jepo.answer_marker=a",
        "sampling.max_new_tokens=8", "run.progress=false", "train.lr=1e-3",
    ])
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and {"bound", "formatted", "kl", "loss"} <= set(metrics[-1])
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()
    bad = CliRunner().invoke(app, ["train", "jepo", f"model.name_or_path={tiny_model}", f"data.path={data}",
                                   "jepo.answer_column=gold"])
    assert bad.exit_code == 2 and "gold" in bad.output


@pytest.mark.slow
def test_jepo_without_a_verifier_raises_the_reference_answers_likelihood_in_tinyworld(tmp_path):
    """JEPO learns what it optimises where no verifier exists: 15 steps of the JEPO preset (16 prompts x 4 chains,
    lr 1e-4) on `spell` level 3 (long-form answers, the checker withheld) lowered the proxy NLL of the reference
    answers on 64 test instances from 3.14 to 0.42 with this seed, and the v2 base's hasty answers gave way to
    worked ones: sampled accuracy 0.27 -> 0.73 (30 steps, 128 instances: NLL 4.27 -> 0.36, accuracy 0.31 -> 0.82).
    results/jepo_tinyworld.md has the comparison against SFT and RL with the verifier."""
    import datasets

    from langplay.evaluation.tinyworld import held_out_tasks, load_policy, reference_loglik, task_scores
    from langplay.tinyworld.base import base_model_path
    from langplay.tinyworld.datasets import task_rows
    from langplay.trainer import Trainer

    rows = datasets.Dataset.from_list(task_rows("train", 2000, 0, families=["spell"], levels=[3]))
    config = load_config("jepo_tinyworld", [
        f"model.name_or_path={base_model_path()}", f"run.output_dir={tmp_path}", "run.progress=false",
        "run.save_every=0", "train.steps=15", "train.lr=1e-4", "train.seed=0",
    ])
    assert config.jepo.rewards == [] and config.jepo.estimator == "multi"  # JEPO alone: no verifier anywhere
    Trainer(config, dataset=rows).train()
    tasks = held_out_tasks(64, seed=123, families=["spell"], levels=[3])
    nll, accuracy = {}, {}
    for name, model in (("before", base_model_path()), ("after", tmp_path / "final")):
        policy = load_policy(model)
        nll[name] = -statistics.mean(reference_loglik(policy, tasks, n=4, seed=5))
        accuracy[name] = statistics.mean(task_scores(policy, tasks, n=4, temperature=1.0, seed=5, exact=True))
    assert nll["after"] <= nll["before"] - 1.0, nll
    assert accuracy["after"] >= accuracy["before"] + 0.2, accuracy


def test_group_terms_by_hand():
    """One prompt's JEPO arithmetic as a pure function, on hand-computed numbers."""
    from langplay.algorithms.jepo import group_terms

    single = group_terms([-1.0, None, -3.0], "single", format_penalty=10.0)
    assert single["advantage"].tolist() == [2.0, 0.0, -2.0] and single["sup_weight"].tolist() == [0.5, 0.0, 0.5]
    assert single["format"].tolist() == [5.0, -10.0, 5.0] and single["in_bound"].tolist() == [True, False, True]
    assert single["bound"] == pytest.approx(math.log((math.exp(-1) + math.exp(-3)) / 2))
    multi = group_terms([-1.0, None, -3.0], "multi", format_penalty=10.0)
    lme = math.log((math.exp(-1) + math.exp(-3)) / 2)
    assert multi["advantage"][[0, 2]].tolist() == pytest.approx([2 * (lme + 3), 2 * (lme + 1)])  # n (lme - lme_{-i})
    w = math.exp(-1) / (math.exp(-1) + math.exp(-3))
    assert multi["sup_weight"].tolist() == pytest.approx([w, 0.0, 1 - w])
    lonely = group_terms([None, -2.0, None], "multi", format_penalty=10.0)  # one formatted: no bound advantage
    assert not lonely["in_bound"].any() and lonely["bound"] == -2.0 and lonely["format"][1] == 10.0
    assert group_terms([None, None], "multi", 10.0)["bound"] is None


def test_rl_terms_and_stacking_a_step_by_hand():
    """A prompt on the RL loss gets a 0/1 reward with a leave-one-out baseline; a step's columns are its prompts'
    terms end to end, zero where a prompt has none (an RL prompt has no bound terms, a JEPO prompt no RL term)."""
    from langplay.algorithms.jepo import group_terms, rl_terms, stack_terms

    rl = rl_terms(torch.tensor([1.0, 0.0, 0.5]), threshold=0.5)  # passes [1, 0, 1]: 1 - 1/2, 0 - 1, 1 - 1/2
    assert rl["rl"].tolist() == [0.5, -1.0, 0.5] and rl["bound"] is None
    assert rl_terms(torch.tensor([float("nan"), 1.0]), 0.5)["rl"].tolist() == [-1.0, 1.0]  # NaN does not pass
    step = stack_terms([group_terms([-1.0, None, -3.0], "single", 10.0), rl], n=3)
    assert step["advantage"].tolist() == [2.0, 0.0, -2.0, 0.0, 0.0, 0.0]
    assert step["in_bound"].tolist() == [True, False, True, False, False, False]
    assert step["format"].tolist() == [5.0, -10.0, 5.0, 0.0, 0.0, 0.0]
    assert step["sup_weight"].tolist() == [0.5, 0.0, 0.5, 0.0, 0.0, 0.0]
    assert step["rl"].tolist() == [0.0, 0.0, 0.0, 0.5, -1.0, 0.5]
    assert step["takes_jepo"].tolist() == [True, True, True, False, False, False]
    assert step["advantage"].dtype == torch.float64 and step["in_bound"].dtype == torch.bool
