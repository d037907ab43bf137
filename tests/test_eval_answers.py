"""The answer cache of `langplay eval`: an interrupted evaluation continues; answers never go stale."""

import json

import pytest

from langplay.errors import LangplayError
from langplay.evaluation.answers import (AnswerCache, Decoding, generate_answers, load_eval_policy,
                                         load_prompt_rows, model_identity)
from langplay.testing import save_tiny_model

DECODING = Decoding(temperature=1.0, n=2, max_new_tokens=4, seed=3)


class CountingSampler:
    """Wraps the real sampler to count which prompts reach it."""

    def __init__(self, monkeypatch):
        import langplay.sampling as sampling

        self.prompts, real = [], sampling.make_sampler

        def make(config, policy):
            inner = real(config, policy)
            outer = self

            class Counting:
                def generate(self, prompts, n, seeds, max_new_tokens=None):
                    outer.prompts += prompts
                    return inner.generate(prompts, n, seeds, max_new_tokens)

            return Counting()

        monkeypatch.setattr(sampling, "make_sampler", make)


def test_answers_are_cached_and_an_interrupted_run_continues(tiny_model, tmp_path, monkeypatch):
    policy = load_eval_policy(str(tiny_model), device="cpu")
    prompts = [f"say {c}" for c in "abcde"]
    counter = CountingSampler(monkeypatch)
    fresh = generate_answers(policy, str(tiny_model), prompts, DECODING, progress=False, batch_size=2)
    assert [len(a) for a in fresh] == [2] * 5 and len(counter.prompts) == 5

    cache = AnswerCache(tmp_path / "answers.jsonl")
    first = generate_answers(policy, str(tiny_model), prompts[:3], DECODING, cache, progress=False, batch_size=2)
    assert first == fresh[:3]  # keyed by prompt index within the call: the first 3 are the same draws
    lines = (tmp_path / "answers.jsonl").read_text().splitlines()
    (tmp_path / "answers.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])  # a torn last line
    counter.prompts.clear()
    resumed = generate_answers(policy, str(tiny_model), prompts, DECODING, AnswerCache(tmp_path / "answers.jsonl"),
                               progress=False, batch_size=2)
    assert resumed == fresh  # the same answers as an uninterrupted run
    assert len(counter.prompts) == 3  # only the torn prompt and the two never answered were sampled again

    counter.prompts.clear()
    again = generate_answers(policy, str(tiny_model), prompts, DECODING, AnswerCache(tmp_path / "answers.jsonl"),
                             progress=False)
    assert again == fresh and counter.prompts == []
    hotter = Decoding(temperature=0.5, n=2, max_new_tokens=4, seed=3)
    generate_answers(policy, str(tiny_model), prompts, hotter, AnswerCache(tmp_path / "answers.jsonl"), progress=False)
    assert len(counter.prompts) == 5  # another decoding: nothing served from the cache
    counter.prompts.clear()
    generate_answers(policy, str(tiny_model), prompts, DECODING, AnswerCache(tmp_path / "answers.jsonl"),
                     progress=False, max_prompt_tokens=8)
    assert len(counter.prompts) == 5  # prompts cut shorter: other answers, nothing served from the cache


def test_a_retrained_model_is_not_served_its_predecessors_answers(tmp_path):
    folder = save_tiny_model(tmp_path / "m", seed=0)
    before = model_identity(str(folder))
    save_tiny_model(folder, seed=1)
    assert model_identity(str(folder)) != before
    assert model_identity("org/hub-model") == "org/hub-model"


def test_prompt_rows_are_checked(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "kind": "x"}) + "\n" for i in range(5)))
    assert [r["prompt"] for r in load_prompt_rows(str(path), ["prompt"], limit=2)] == ["q0", "q1"]
    with pytest.raises(LangplayError, match="answer"):
        load_prompt_rows(str(path), ["prompt", "answer"])


def test_an_evaluation_preset_gives_defaults_that_the_command_line_overrides(tmp_path, monkeypatch):
    import langplay.config as config
    from langplay.evaluation.answers import eval_preset

    (tmp_path / "eval_x.yaml").write_text("command: accuracy\ndata: some/set\nlimit: 10\n")
    (tmp_path / "grpo_x.yaml").write_text("train: {steps: 1}\n")
    monkeypatch.setattr(config, "PRESETS", tmp_path)
    options = {"data": None, "limit": 5, "model": "m"}
    assert eval_preset("eval_x", "accuracy", options) == {"data": "some/set", "limit": 5, "model": "m"}
    assert eval_preset(None, "accuracy", options) == {"limit": 5, "model": "m"}
    with pytest.raises(LangplayError, match="langplay eval accuracy"):
        eval_preset("eval_x", "winrate", options)
    with pytest.raises(LangplayError, match="choose one of eval_x"):
        eval_preset("grpo_x", "accuracy", options)
    with pytest.raises(LangplayError, match="unknown options"):
        eval_preset("eval_x", "accuracy", {"model": None})


def test_explicit_noise_keys_reproduce_another_evaluations_draws(tiny_model, tmp_path):
    from langplay.sampling.keys import key_of

    policy = load_eval_policy(str(tiny_model), device="cpu")
    prompts = ["say a", "say b"]
    plain = generate_answers(policy, str(tiny_model), prompts, DECODING, progress=False)
    swapped = generate_answers(policy, str(tiny_model), prompts[::-1], DECODING, AnswerCache(tmp_path / "a.jsonl"),
                               progress=False, noise_keys=[key_of(3, 1), key_of(3, 0)])
    assert swapped == plain[::-1]  # each prompt drew from the key it was given, not from its position
    cache = AnswerCache(tmp_path / "a.jsonl")
    assert len(cache.entries) == 2
    generate_answers(policy, str(tiny_model), prompts[::-1], DECODING, cache, progress=False)
    assert len(AnswerCache(tmp_path / "a.jsonl").entries) == 4  # positional keys are other draws: not served


def test_a_prompt_asked_twice_gets_one_set_of_answers(tiny_model):
    """As the cache keys answers: by prompt and decoding (a judge's A-vs-A prompt, in both orders, gets one reply);
    with explicit noise keys, by key too."""
    from langplay.sampling.keys import key_of

    policy = load_eval_policy(str(tiny_model), device="cpu")
    prompts = ["say a", "say b", "say a"]
    answers, finished = generate_answers(policy, None, prompts, DECODING, progress=False, with_finished=True)
    assert answers[0] == answers[2] and finished[0] == finished[2]
    alone = generate_answers(policy, None, prompts[:2], DECODING, progress=False)
    assert alone[1] == answers[1]  # the other prompts keep their own draws
    keyed = generate_answers(policy, None, prompts, DECODING, progress=False,
                             noise_keys=[key_of(3, 0), key_of(3, 1), key_of(3, 2)])
    assert keyed[0] != keyed[2]  # distinct keys: distinct draws
