"""The irl reward kind (issue 37, item 3): the extracted reward at the gamma the IRL model was trained with (recorded
with every model an IRL run saves) or the spec's, terminal only for completions that finished with EOS."""

import inspect
import json

import pytest
import torch
from pydantic import ValidationError

from langplay.config import LoraConfig, ModelConfig, RewardSpec, load_config
from langplay.errors import ConfigError, LangplayError
from langplay.logprobs import completion_logprob_sums
from langplay.models import MODEL_FACTS
from langplay.policy import Policy
from langplay.rewards import build_scorer
from langplay.evaluation.metrics import reward_agreement
from langplay.rewards.implicit import GAMMA_FACT, ImplicitRewardScorer, extracted_rewards, implicit_rewards


@pytest.fixture(scope="module")
def policy(tiny_model):
    return Policy.from_config(ModelConfig(name_or_path=str(tiny_model), device="cpu"), with_reference=False)


@pytest.fixture(scope="module")
def irl_model(tiny_model, tmp_path_factory):
    """The tiny model saved as an IRL run saves it: with the gamma it trained with (0.99) in its facts."""
    trained = Policy.from_config(ModelConfig(name_or_path=str(tiny_model), device="cpu"), with_reference=False)
    trained.facts[GAMMA_FACT] = 0.99
    return trained.save(tmp_path_factory.mktemp("irl") / "final")


def hand_reward(model, prompt_ids, completion_ids, gamma, terminal, eos):
    """sum_t log pi(a_t|s_t) + V(s_t) - gamma V(s_t+1) from the logits of one unpadded sequence, a loop: a finished
    completion has EOS as its last action and V = 0 after it; a truncated one bootstraps V after its last token."""
    actions = completion_ids + ([eos] if terminal else [])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + actions])).logits[0, len(prompt_ids) - 1 :].double()
    total = 0.0
    for t, a in enumerate(actions):
        value = torch.logsumexp(logits[t], 0)
        after = 0.0 if terminal and t == len(actions) - 1 else torch.logsumexp(logits[t + 1], 0)
        total += float(torch.log_softmax(logits[t], 0)[a] + value - gamma * after)
    return total


GROUP = ["aaa", "ab", "hello", "b", "zzzz"]  # one prompt's completions, as in a GRPO or LSP group


def test_the_reward_at_the_recorded_gamma_is_not_the_log_likelihood(policy, irl_model):
    """At gamma 1 the summed reward is log pi(y|x) + V(s_0): within a group it differs from the log-likelihood by one
    constant, so advantages are the log-likelihood's. The reward at the recorded 0.99 is the discounted sum."""
    prompt = policy.format_prompt("say a")
    prompts, eos = [prompt] * len(GROUP), policy.tokenizer.eos_token_id
    finished = [True] * len(GROUP)
    scorer = build_scorer([RewardSpec(kind="irl", model=str(irl_model))])  # no gamma: the recorded one
    rewards, _ = scorer.score(prompts, GROUP, {"finished": finished})
    hand = [hand_reward(policy.model, policy.encode(prompt), policy.encode(c), 0.99, True, eos) for c in GROUP]
    assert rewards == pytest.approx(hand, abs=1e-4)

    loglik = completion_logprob_sums(policy.model, [policy.encode(prompt)] * len(GROUP),
                                     [policy.encode(c) + [eos] for c in GROUP], policy.tokenizer.pad_token_id)
    at_one = extracted_rewards(policy, prompts, GROUP, finished, gamma=1.0)
    shift_at_one = [r - ll for r, ll in zip(at_one, loglik)]
    shift = [r - ll for r, ll in zip(rewards, loglik)]
    assert max(shift_at_one) - min(shift_at_one) < 1e-4  # gamma 1: log-likelihood plus V(s_0), the same for all
    assert max(shift) - min(shift) > 1e-2  # gamma 0.99: not a shifted log-likelihood


def test_a_truncated_completion_is_bootstrapped_and_a_finished_one_ends_with_eos(policy, tiny_model):
    scorer = ImplicitRewardScorer(str(tiny_model), gamma=0.9, device="cpu")
    prompt, eos = policy.format_prompt("say a"), policy.tokenizer.eos_token_id
    rewards, _ = build_scorer([RewardSpec(kind="irl", model=str(tiny_model), gamma=0.9)]).score(
        [prompt] * 2, ["aaa", "aaa"], {"finished": [True, False]})
    done = hand_reward(policy.model, policy.encode(prompt), policy.encode("aaa"), 0.9, True, eos)
    cut = hand_reward(policy.model, policy.encode(prompt), policy.encode("aaa"), 0.9, False, eos)
    assert abs(done - cut) > 1e-2  # the same text, scored two ways
    assert rewards == pytest.approx([done, cut], abs=1e-4)
    assert scorer([prompt] * 2, ["aaa", "aaa"], finished=[False, True]) == pytest.approx([cut, done], abs=1e-4)
    with pytest.raises(LangplayError, match="needs the column 'finished'"):  # the text alone cannot tell
        scorer([prompt], ["aaa"], raw_prompt=["say a"])
    with pytest.raises(LangplayError, match="2 finished flags for 1 completions"):
        scorer([prompt], ["aaa"], finished=[True, False])


def test_the_recorded_gamma_is_read_back_and_a_spec_gamma_wins(tiny_model, irl_model):
    assert json.loads((irl_model / MODEL_FACTS).read_text()) == {GAMMA_FACT: 0.99}
    assert ImplicitRewardScorer(str(irl_model), device="cpu").gamma == 0.99
    assert ImplicitRewardScorer(str(irl_model), gamma=0.5, device="cpu").gamma == 0.5
    assert ImplicitRewardScorer(str(irl_model), gamma=0.0, device="cpu").gamma == 0.0  # 0 is a gamma, not "none"
    assert not (tiny_model / MODEL_FACTS).exists()  # a model saved with no facts has no file


def test_a_missing_or_bad_gamma_is_a_one_line_error(tiny_model, irl_model, tmp_path):
    with pytest.raises(LangplayError, match="needs gamma: the model records none") as caught:
        build_scorer([RewardSpec(kind="irl", model=str(tiny_model))])  # a model no IRL run saved
    assert "\n" not in str(caught.value)
    for bad, says in [("gamma: 1.5", "less than or equal to 1"), ("gamma: -0.1", "greater than or equal to 0")]:
        with pytest.raises(ConfigError, match=says) as caught:
            load_config(overrides=[f"grpo.rewards=[{{kind: irl, model: {irl_model}, {bad}}}]"])
        assert "\n" not in str(caught.value) and "gamma" in str(caught.value)
    with pytest.raises(ConfigError, match="gamma applies to rewards of kind 'irl' only, not 'exact_match'"):
        load_config(overrides=["grpo.rewards=[{kind: exact_match, gamma: 0.9}]"])
    one = load_config(overrides=[f"grpo.rewards=[{{kind: irl, model: {irl_model}, gamma: 1}}]"])
    assert one.grpo.rewards[0].gamma == 1  # the bounds are allowed
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        RewardSpec(kind="irl", model=str(irl_model), gamma=2)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MODEL_FACTS).write_text(json.dumps({GAMMA_FACT: 7}))
    with pytest.raises(LangplayError, match="not a number in"):
        ImplicitRewardScorer(str(broken))
    (broken / MODEL_FACTS).write_text("{not json")
    with pytest.raises(LangplayError, match="cannot read") as caught:
        ImplicitRewardScorer(str(broken))
    assert "\n" not in str(caught.value)


def test_a_saved_model_carries_its_facts_and_a_resave_without_them_drops_the_file(tiny_model, tmp_path):
    from langplay.checkpoint import save_model_weights

    full = Policy.from_config(ModelConfig(name_or_path=str(tiny_model), device="cpu"), with_reference=False)
    full.facts[GAMMA_FACT] = 0.9
    save_model_weights(full, tmp_path / "full")  # a checkpoint's model/ folder
    lora = Policy.from_config(ModelConfig(name_or_path=str(tiny_model), device="cpu", lora=LoraConfig(r=4, alpha=8)),
                              with_reference=False)
    lora.facts[GAMMA_FACT] = 0.8
    save_model_weights(lora, tmp_path / "adapter")  # a LoRA checkpoint's adapter folder
    lora.save(tmp_path / "merged")  # final/: merged
    read = lambda folder: json.loads((tmp_path / folder / MODEL_FACTS).read_text())[GAMMA_FACT]  # noqa: E731
    assert (read("full"), read("adapter"), read("merged")) == (0.9, 0.8, 0.8)
    full.facts.clear()
    full.save(tmp_path / "full")  # another model in the same folder: no stale record
    assert not (tmp_path / "full" / MODEL_FACTS).exists()


def test_no_implicit_reward_function_defaults_gamma_to_one():
    for function in (implicit_rewards, extracted_rewards, reward_agreement):
        assert inspect.signature(function).parameters["gamma"].default is inspect.Parameter.empty, function


def test_an_irl_run_records_its_gamma_with_every_model_it_saves(tiny_model, sft_file, tmp_path):
    """Needs IRL to put its irl.gamma in the policy's facts (algorithms/irl.py); an SFT run records none."""
    from typer.testing import CliRunner

    from langplay.cli import app

    def train(algorithm, *more):
        result = CliRunner().invoke(app, [
            "train", algorithm, f"model.name_or_path={tiny_model}", f"data.path={sft_file}",
            f"run.output_dir={tmp_path}/{algorithm}", "model.device=cpu", "train.steps=2", "train.prompts_per_step=2",
            "run.save_every=1", "run.progress=false", *more])
        assert result.exit_code == 0, result.output
        return tmp_path / algorithm

    run = train("irl", "irl.gamma=0.9")
    for model in (run / "final", *(run / "checkpoints" / f"step-00000{step}" / "model" for step in (1, 2))):
        assert json.loads((model / MODEL_FACTS).read_text()) == {GAMMA_FACT: 0.9}, model
    assert build_scorer([RewardSpec(kind="irl", model=str(run / "final"))]).scorers[0].function.gamma == 0.9
    assert not (train("sft") / "final" / MODEL_FACTS).exists()
