"""tinyworld with the engine: the HF tokenizer, the shipped base model against its bars, evaluation, the demo."""

import json
import statistics
from pathlib import Path

import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from langplay.cli import app
from langplay.evaluation.tinyworld import (MAX_NEW_TOKENS, answer, evaluate_world, held_out_tasks, load_policy,
                                          render_table, task_scores)
from langplay.tinyworld import check
from langplay.tinyworld.base import BASE_RECIPE, base_model_path, same_recipe, training_rows
from langplay.tinyworld.tasks import CHALLENGER_PROMPT, FAMILIES, parse, split_of
from langplay.tinyworld.tokenizer import save_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_tokenizer_round_trips_through_autotokenizer(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(save_tokenizer(tmp_path / "tok"))
    text = "Reverse abc.\nA: 12+3=15. The answer is 15!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tokenizer.decode(ids) == text
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<s>Q: hi\nA: "
    assert tokenizer("</s>", add_special_tokens=False)["input_ids"] == [tokenizer.eos_token_id]


def test_base_training_data_is_deterministic_and_from_the_training_split():
    rows = training_rows(300, seed=0)
    assert rows == training_rows(300, seed=0) and rows != training_rows(300, seed=1)
    challenger = [r for r in rows if r["prompt"] == CHALLENGER_PROMPT]
    assert 0 < len(challenger) < 60 and all(parse(r["completion"]) is not None for r in challenger)
    tasks = [parse(r["prompt"]) for r in rows if r["prompt"] != CHALLENGER_PROMPT]
    assert all(t is not None for t in tasks)
    assert all(split_of(t.family, t.params) == "train" for t in tasks)
    assert all(split_of(t.family, t.params) == "test" for t in held_out_tasks(per_level=3))
    assert not {t.prompt for t in held_out_tasks(per_level=3)} & {r["prompt"] for r in rows}
    one_level = held_out_tasks(per_level=3, seed=7, families=["spell", "add"], levels=[3])
    assert one_level == [t for t in held_out_tasks(per_level=3, seed=7, families=["spell", "add"]) if t.level == 3]


def test_the_hasty_author_writes_rows_on_top_of_the_careful_ones_above_level_one_and_nothing_else():
    from langplay.tinyworld.tasks import ANSWER_MARKER, FAMILIES, hasty_response

    rows = [r for r in training_rows(6000, seed=0) if r["prompt"] != CHALLENGER_PROMPT]
    hasty, careful = {}, {}
    for row in rows:
        task = parse(row["prompt"])
        key = (FAMILIES[task.family].kind == "reasoning", task.level >= BASE_RECIPE["hasty_from_level"])
        is_hasty = row["completion"].startswith(ANSWER_MARKER) and row["completion"] != task.reference
        (hasty if is_hasty else careful).setdefault(key, []).append(row)
    assert set(hasty) == {(True, True)}  # only reasoning rows above level 1
    assert all(row["completion"] == hasty_response(parse(row["prompt"])) for row in hasty[True, True])
    ratio = len(hasty[True, True]) / len(careful[True, True])  # on top of the careful rows, not instead of them
    assert abs(ratio - BASE_RECIPE["hasty_per_careful"]) < 0.1, ratio
    assert len(careful[True, True]) > 0.1 * len(rows)


def test_open_rows_give_the_canonical_reference_or_a_random_valid_answer_by_the_recipe_s_share():
    rows = [r for r in training_rows(6000, seed=0) if r["prompt"] != CHALLENGER_PROMPT]
    open_rows = [(parse(r["prompt"]), r["completion"]) for r in rows]
    open_rows = [(task, answer) for task, answer in open_rows if FAMILIES[task.family].kind == "open"]
    canonical = [answer == task.reference for task, answer in open_rows]
    assert all(check(task, answer) == 1.0 for task, answer in open_rows)
    assert abs(sum(canonical) / len(canonical) - BASE_RECIPE["open_reference_fraction"]) < 0.05
    sum_to = {answer for task, answer in open_rows if task.family == "sum_to" and answer != task.reference}
    assert len(sum_to) > 100  # the other rows are random splits, not the canonical one under another name


def test_a_build_is_the_recipe_whatever_its_micro_batches():
    """Micro-batches split a step's rows into passes (speed, memory, rounding); the gradient is the same sum, so a
    checkpoint built in other micro-batches is still the recipe; any other key is not."""
    assert same_recipe({**BASE_RECIPE, "micro_batch_size": 45}, BASE_RECIPE)
    for key, value in (("lr", 1e-3), ("challenger_fraction", 0.1), ("steps", 10), ("precision", "bf16")):
        assert not same_recipe({**BASE_RECIPE, key: value}, BASE_RECIPE), key

LEVEL_1_BAR = 0.8  # the bar; measured 0.89 at 6 per family (60 test instances of level 1), 0.870 at 24
GAIN_BAR = 0.07  # whole-mix near-greedy gain of 40 GRPO steps (16 x 4): measured +0.187 (below)

@pytest.fixture(scope="module")
def base():
    return load_policy(base_model_path())


@pytest.mark.slow
def test_shipped_base_model_is_stronger_on_easy_levels(base):
    """The shipped checkpoint (tinyworld v2, candidate h built with its recipe's seed 1): its recipe, its size, and
    by level on *test* instances (24 per family and level, results/lab_diagnosis_v2h-s1.md: near-greedy 0.87 0.49
    0.49 0.45) clearly weaker on the hardest than on the easiest, and near-greedy answers to harder reasoning tasks
    hasty (they work the steps in 2% of answers, sampled ones in 42%): the room RL on data is meant to find.

    The easy-level bar of 0.8 is met at 24 per cell (0.870; the seed-0 build of the same recipe, 0.854; two earlier
    builds of the same recipe and seeds read 0.795 / 0.817). This build was chosen between the two on *tune*
    instances by a rule fixed before (results/lab_diagnosis_v2h_choice_reading.md, which also tells the four builds
    apart); spell and reverse still swing by build and by draw."""
    from langplay.tinyworld.tasks import FAMILIES, shows_work

    config = json.loads((base_model_path() / "recipe.json").read_text())
    assert same_recipe(config["recipe"], {**BASE_RECIPE, "steps": config["recipe"]["steps"]})
    weights = base_model_path() / "model.safetensors"
    assert weights.stat().st_size <= 32 * 2**20
    assert sum(p.numel() for p in base.model.parameters()) <= 10_000_000
    tasks = held_out_tasks(per_level=6)
    responses = [r[0] for r in answer(base, tasks)]
    by_level = {}
    for task, response in zip(tasks, responses):
        by_level.setdefault(task.level, []).append(check(task, response))
    assert statistics.mean(by_level[1]) >= LEVEL_1_BAR
    assert statistics.mean(by_level[4]) <= statistics.mean(by_level[1]) - 0.25  # room to learn on the hardest
    hard_reasoning = [shows_work(r) for t, r in zip(tasks, responses)
                      if FAMILIES[t.family].kind == "reasoning" and t.level > 1]
    assert statistics.mean(hard_reasoning) <= 0.15


def test_answer_says_which_responses_ended_with_eos_and_keeps_to_max_new_tokens(base):
    tasks = held_out_tasks(per_level=1, families=["max", "spell"])  # answers of 1-4 characters, and long-form ones
    draw = dict(n=2, temperature=1.0, seed=3)
    full, full_ended = answer(base, tasks, **draw, with_finished=True)
    assert answer(base, tasks, **draw) == full  # the default: the same responses, alone
    cut, cut_ended = answer(base, tasks, **draw, max_new_tokens=4, with_finished=True)
    assert len(cut) == len(cut_ended) == len(tasks) and all(len(r) == 2 for r in cut + cut_ended)
    for responses, ended, limit in ((full, full_ended, MAX_NEW_TOKENS), (cut, cut_ended, 4)):
        for text, finished in zip(sum(responses, []), sum(ended, [])):
            # one token per character, EOS not in the text: a response without EOS fills the limit, one with it
            # has room left for the EOS
            tokens = len(base.encode(text))
            assert tokens <= limit and finished == (tokens < limit), (text, finished, limit)
    # the keyed noise is per position, so a response cut at 4 tokens is the start of the uncut one
    for short, finished, whole in zip(sum(cut, []), sum(cut_ended, []), sum(full, [])):
        assert whole.startswith(short) and (whole == short or not finished)
    assert any(sum(cut_ended, [])) and not all(sum(cut_ended, []))  # both kinds were checked


def test_reference_nll_pools_tokens_eos_included_by_group_and_reference_loglik_agrees(base):
    import torch

    from langplay.evaluation.tinyworld import reference_loglik, reference_nll

    prompts, targets, groups = ["Add 2 and 3.", "Name a letter.", "Add 1 and 1."], ["5", "b", "21"], ["x", "y", "x"]

    def nll(prompt, target):  # a direct forward pass: -log pi(target + EOS | x) summed, and its token count
        x, y = base.encode(base.format_prompt(prompt)), base.encode(target) + [base.tokenizer.eos_token_id]
        with torch.no_grad():
            logp = base.model(input_ids=torch.tensor([x + y])).logits[0, len(x) - 1 : -1].log_softmax(-1)
        return -logp.gather(1, torch.tensor(y)[:, None]).sum().item(), len(y)

    (a, na), (b, nb), (c, nc) = (nll(p, t) for p, t in zip(prompts, targets))
    out = reference_nll(base, prompts, targets, groups)
    assert list(out) == ["all", "x", "y"] and (na, nb, nc) == (2, 2, 3)  # one token a character, and EOS
    assert out["all"] == pytest.approx((a + b + c) / 7, abs=1e-5)  # pooled by tokens, not a mean of pairs
    assert out["x"] == pytest.approx((a + c) / 5, abs=1e-5) and out["y"] == pytest.approx(b / 2, abs=1e-5)
    largest = held_out_tasks(per_level=1, families=["max"], levels=[1])
    assert reference_loglik(base, largest) == pytest.approx([-nll(t.prompt, t.reference)[0] for t in largest], abs=1e-5)


def test_reference_pairs_take_an_open_tasks_valid_answers_and_an_exact_tasks_reference():
    from langplay.evaluation.tinyworld import reference_pairs
    from langplay.tinyworld.datasets import valid_answers

    between, largest = held_out_tasks(per_level=1, families=["between", "max"], levels=[1])
    prompts, targets, kinds = reference_pairs([largest, between], 3)
    assert prompts == [largest.prompt] + [between.prompt] * 3 and kinds == ["exact", "open", "open", "open"]
    assert targets == [largest.reference, *valid_answers(between, 3)]
    assert all(check(between, target) == 1.0 for target in targets[1:])
    assert reference_pairs([], 3) == ([], [], [])


def test_checked_answers_and_the_by_kind_pool_stats_and_reward_agreement_over_them(base):
    """The per-sample evaluation of k samples a prompt: the checker's scores beside `answer`'s samples, then
    pool_stats and reward_agreement over the samples of each family kind, as if called on each kind's part."""
    from langplay.evaluation.metrics import characters, pool_stats, reward_agreement
    from langplay.evaluation.tinyworld import checked_answers, kinds_of, pool_stats_by_kind, pooled_reward_agreement

    tasks = held_out_tasks(per_level=1, families=["between", "letters", "max"], levels=[1, 2])
    draw = dict(temperature=1.0, seed=5, max_new_tokens=12, batch_prompts=4)
    pools, finished, scores = checked_answers(base, tasks, 3, **draw)
    assert (pools, finished) == answer(base, tasks, n=3, **draw, with_finished=True)
    assert scores == [[check(t, r) for r in pool] for t, pool in zip(tasks, pools)]
    assert kinds_of(tasks) == ["open"] * 4 + ["exact"] * 2
    by_kind = pool_stats_by_kind(tasks, pools, scores, finished)
    assert list(by_kind) == ["exact", "open"]
    for kind, part in (("open", slice(0, 4)), ("exact", slice(4, 6))):
        assert by_kind[kind] == pool_stats(pools[part], scores[part], finished[part], max_n=2, tokenize=characters)
    flat = lambda per_task: sum(per_task, [])  # noqa: E731
    prompts = [base.format_prompt(t.prompt) for t in tasks for _ in range(3)]
    kinds = [kind for kind in kinds_of(tasks) for _ in range(3)]
    by_sample = reward_agreement(base, prompts, flat(pools), flat(finished), flat(scores), kinds, gamma=0.9)
    # compared as JSON: a kind whose scores are all equal has a NaN Spearman on both sides
    assert json.dumps(pooled_reward_agreement(base, tasks, pools, finished, scores, gamma=0.9)) == json.dumps(by_sample)
    assert set(by_sample) == {"all", "exact", "open"}


def test_evaluation_report_and_cli(base, tmp_path):
    report = evaluate_world(base, baseline=base_model_path(), per_level=1, k=3, n_bound=2)
    assert {"score", "accuracy", "nll", "table", "diversity", "versus_baseline"} <= set(report)
    assert report["versus_baseline"]["ties"] == len(held_out_tasks(per_level=1))  # a model ties with itself
    assert len(report["scores"]) == len(held_out_tasks(per_level=1))  # one per prompt, for paired comparisons
    assert report["score"] == pytest.approx(sum(report["scores"]) / len(report["scores"]))
    assert set(report["diversity"]) == {"between", "sum_to", "letters"}
    assert "tinyworld held-out evaluation" in render_table(report)
    result = CliRunner().invoke(app, ["eval", "tinyworld", "--per-level", "1", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "eval.png").is_file() and json.loads((tmp_path / "eval.json").read_text())["per_level"] == 1
    result = CliRunner().invoke(app, ["eval", "tinyworld", "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "model folder not found" in result.output


@pytest.mark.slow
def test_grpo_on_tinyworld_raises_the_held_out_score_of_the_family_it_trains_on(tmp_path):
    """Sampling, the judge's reward, group advantages, the loss and the update learn on tinyworld end to end:
    60 GRPO steps on `count` (16 prompts x 8, lr 1e-4, 10 s) raised the sampled score on 128 count test instances
    x 4 samples (v1 base) from 0.437 to 0.537 (70 prompts better, 39 worse; near-greedy 0.551 -> 0.547, level)."""
    from langplay.config import load_config
    from langplay.tinyworld.datasets import task_dataset
    from langplay.trainer import Trainer

    config = load_config("grpo_tinyworld", [
        f"model.name_or_path={base_model_path()}", f"run.output_dir={tmp_path}", "run.progress=false",
        "run.save_every=0", "train.steps=60", "train.prompts_per_step=16", "train.lr=1e-4",
    ])
    Trainer(config, dataset=task_dataset("train", 4000, 0, families=["count"])).train()
    tasks = held_out_tasks(per_level=32, seed=123, families=["count"])
    before, after = (statistics.mean(task_scores(model, tasks, n=4, temperature=1.0, seed=5)) for model in (base_model_path(), tmp_path / "final"))
    assert after >= before + 0.05, (before, after)


@pytest.mark.slow
def test_grpo_on_the_whole_mix_beats_the_base_model_on_held_out_instances(tmp_path):
    """The lab's bar in miniature: GRPO on training prompts of every family and level (the data baseline of
    results/lsp_tinyworld.md: the preset, 40 steps of 16 prompts x 4, lr 2e-4) raises the near-greedy score of
    the whole test mix, paired per prompt, with the interval above 0; the reasoning answers learn to work the
    steps. Measured with the shipped base: 0.582 -> 0.769 on 320 test instances (+0.187, bootstrap 95% low
    +0.148; fails with a bar of 1.0, on purpose once); reasoning answers working the steps 0.05 -> 1.00 in
    results/cross_method.md; 150 steps of 16 x 8 over 3 seeds: +0.170 [+0.150, +0.189] on 1600, results/lab_bar.md."""
    from langplay.config import load_config
    from langplay.evaluation.metrics import bootstrap_interval
    from langplay.tinyworld.datasets import task_dataset
    from langplay.tinyworld.tasks import FAMILIES, shows_work
    from langplay.trainer import Trainer

    config = load_config("grpo_tinyworld", [
        f"model.name_or_path={base_model_path()}", f"run.output_dir={tmp_path}", "run.progress=false",
        "run.save_every=0", "train.steps=40", "train.prompts_per_step=16", "grpo.group_size=4", "train.seed=0",
    ])
    assert config.train.lr == 2e-4
    Trainer(config, dataset=task_dataset("train", 4000, 0)).train()
    tasks = held_out_tasks(per_level=8, seed=123)
    before, after = (task_scores(model, tasks) for model in (base_model_path(), tmp_path / "final"))
    gains = [a - b for a, b in zip(after, before)]
    low, _ = bootstrap_interval(gains)
    assert statistics.mean(gains) >= GAIN_BAR and low > 0, (statistics.mean(before), statistics.mean(after), low)
    reasoning = [t for t in tasks if FAMILIES[t.family].kind == "reasoning" and t.level > 1]
    worked = [statistics.mean(shows_work(r[0]) for r in answer(load_policy(m), reasoning))
              for m in (base_model_path(), tmp_path / "final")]
    assert worked[1] >= worked[0] + 0.3, worked


@pytest.mark.slow
def test_demo_runs_end_to_end_in_miniature(tmp_path):
    from langplay.demo import run_demo

    report = run_demo(tmp_path / "demo", steps=2, per_level=1)
    assert "versus_baseline" in report
    mix = report["mix"]  # the whole mix on its own, larger held-out set, paired against the base model
    assert mix["family"] == "all" and mix["prompts"] == 40 * 32 and 0 <= mix["score"] <= 1
    assert mix["wins"] + mix["ties"] + mix["losses"] == mix["prompts"]
    low, high = mix["gain_interval"]
    assert low <= mix["score"] - mix["baseline_score"] <= high
    queries = report["queries"]  # where the challenger's queries went: all 16 queries of each step are recorded
    assert queries["first"]["queries"] == 2 * 16 and 0 <= queries["last"]["valid"] <= 1
    assert abs(sum(queries["first"]["levels"].values()) - 1) < 1e-9 or queries["first"]["valid"] == 0
    for name in ("metrics.jsonl", "samples.jsonl", "eval.json", "eval.png", "training.png", "final/model.safetensors"):
        assert (tmp_path / "demo" / name).is_file(), name


def test_query_mix_counts_valid_distinct_and_levels_of_the_chosen_steps(tmp_path):
    """Four queries at step 1 (two the same, one unparseable) and one at step 2 that the range leaves out."""
    from langplay.evaluation.tinyworld import query_mix

    tasks = held_out_tasks(per_level=1, families=["max"], levels=[1, 3])
    rows = [{"step": 1, "query": q} for q in (tasks[0].prompt, tasks[0].prompt, tasks[1].prompt, "not a task")]
    rows.append({"step": 2, "query": "also not a task"})
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mix = query_mix(tmp_path / "samples.jsonl", range(1, 2))
    assert mix["queries"] == 4 and mix["valid"] == 0.75 and mix["distinct"] == 0.75
    assert mix["levels"] == {"1": pytest.approx(2 / 3), "3": pytest.approx(1 / 3)} and mix["families"] == {"max": 3}


def test_the_shipped_base_writes_parseable_queries_as_challenger():
    """Self-play needs a challenger whose queries parse (#20: at least 80%): sampled with LSP's preset
    (temperature 1) from the challenger prompt, 1024 queries of the shipped base, 32 to each of 32 prompts.
    Measured 0.830 [0.807, 0.853] (2048 other queries: 0.858, results/lab_diagnosis_v2h-s1.md; 0.81-0.83 over
    LSP's first 5 steps in results/lsp_tinyworld_long.md; fails with a bar of 0.99, on purpose once). 256 queries
    read 0.797 once: too few to tell 0.80 from 0.85 (standard error 0.022). Many families, and varied."""
    from langplay.evaluation.tinyworld import challenger_queries

    measured = challenger_queries(load_policy(base_model_path()), prompts=32, per_prompt=32, seed=7)
    assert measured["queries"] == 1024 and measured["parsed"] >= 0.80, measured
    assert measured["families"] >= 6 and measured["distinct"] > 800 / 1024  # varied, not one query repeated


def test_the_base_build_is_deterministic_and_the_shipped_checkpoint_is_the_one_its_recipe_names(tmp_path):
    """`langplay world build-base` is deterministic from its recipe: two short builds (3 steps, one through the
    CLI, which says whether it rebuilt the shipped weights) give the same weights bit for bit, and each writes their
    sha256 into its recipe.json. The shipped checkpoint's recipe.json names the weights beside it (a full rebuild
    here on 2026-12-06 reproduced them: the same sha256)."""
    from typer.testing import CliRunner

    from langplay.build_base import build_base
    from langplay.cli import app
    from langplay.tinyworld.base import weights_sha256

    first = build_base(tmp_path / "a", steps=3, progress=False)
    result = CliRunner().invoke(app, ["world", "build-base", "--output", str(tmp_path / "b"), "--steps", "3"])
    assert result.exit_code == 0 and ", not the shipped checkpoint's" in result.output, result.output
    second = tmp_path / "b"
    recorded = [json.loads((folder / "recipe.json").read_text())["weights_sha256"] for folder in (first, second)]
    assert recorded[0] == recorded[1] == weights_sha256(first) == weights_sha256(second)
    shipped = json.loads((base_model_path() / "recipe.json").read_text())
    assert shipped["weights_sha256"] == weights_sha256(base_model_path())
    assert recorded[0] != shipped["weights_sha256"]  # 3 steps are not the recipe's 4000
