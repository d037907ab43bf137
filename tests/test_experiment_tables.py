"""experiments/common.py: the experiments' markdown table cells from column specs; irl_report.py's tables from them."""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from common import cells, dig, mean_of, paired_gain  # noqa: E402


def test_cells_from_column_specs_by_hand():
    reports = [{"T": {"1": {"acc": 0.5}}, "nll": [3.0, 2.0], "extra": {"x": 1.0}},
               {"T": {"1": {"acc": 0.7}}, "nll": [4.0, 1.0]}]
    assert dig(reports[0], "nll/-1") == 2.0 and dig(reports[1], "extra/x") is None
    assert dig(reports[0], "nll/0/deeper") is None
    columns = {"acc": "T/{T}/acc", "last": "nll/-1", "x": "extra/x", "gain": lambda r, t: r["nll"][0] - r["nll"][-1]}
    # mean ± sd over the two reports: sd of [0.5, 0.7] = 0.1 sqrt 2; a missing value is left out (one value: itself)
    assert cells(reports, columns, "1") == ["0.600 ± 0.141", "1.500 ± 0.707", "1.000", "2.000 ± 1.414"]
    assert cells(reports, {"acc": "T/{T}/acc"}, "1", cell=lambda v: f"{mean_of(v):.2f}") == ["0.60"]
    assert math.isnan(mean_of([None, float("nan")])) and mean_of([None, 2.0, 4.0]) == 3.0


def test_paired_gain_averages_seeds_per_prompt_before_the_difference():
    """Two trained seeds [1, 0] and [0, 0] against one reference [0, 0]: per prompt +0.5 and 0, gain +0.25, and
    the bootstrap interval of two prompts spans their values."""
    gain = paired_gain([[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0]])
    assert gain["gain"] == 0.25
    assert 0.0 <= gain["ci_low"] <= 0.25 <= gain["ci_high"] <= 0.5
    assert paired_gain([[0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]])["gain"] == -0.25  # the reference's seeds too


def test_irl_report_rewrites_the_committed_markdown_from_the_saved_results(tmp_path):
    """experiments/irl_report.py, from the committed results/irl_tinyworld.json and the written reading: the
    committed results/irl_tinyworld.md to the byte, and the plot."""
    import json
    import shutil

    from irl_report import plot, write_markdown

    results = Path(__file__).resolve().parents[1] / "results"
    shutil.copy(results / "irl_tinyworld_reading.md", tmp_path)
    saved = json.loads((results / "irl_tinyworld.json").read_text())
    write_markdown(saved, tmp_path)
    assert (tmp_path / "irl_tinyworld.md").read_text() == (results / "irl_tinyworld.md").read_text()
    plot(saved, tmp_path)
    assert (tmp_path / "irl_tinyworld.png").stat().st_size > 10_000


def test_the_lab_scripts_rewrite_their_committed_markdown_and_the_bar_is_judged_from_the_numbers(tmp_path):
    """lab_diagnosis.py and lab_bar.py from their committed JSON: the committed markdown to the byte; and the
    bar's verdict follows its four conditions (a gain of +0.10 with the interval above 0 is met, one below is not)."""
    import json

    import lab_bar
    import lab_diagnosis

    results = Path(__file__).resolve().parents[1] / "results" / "archive"  # tables of earlier bases
    for module, name in [(lab_diagnosis, "lab_diagnosis_v1"), (lab_bar, "lab_bar_tune_lr2e-4")]:
        module.write_markdown(json.loads((results / f"{name}.json").read_text()), tmp_path / f"{name}.md")
        assert (tmp_path / f"{name}.md").read_text() == (results / f"{name}.md").read_text()
    report = json.loads((results / "lab_bar_tune_lr2e-4.json").read_text())
    assert "**not met**" in (tmp_path / "lab_bar_tune_lr2e-4.md").read_text()
    report.update(gain=0.12, ci_low=0.05, ci_high=0.2, minutes=9.0)
    report["accuracy"].update(gain=0.06)
    lab_bar.write_markdown(report, tmp_path / "met.md")
    assert "**met**" in (tmp_path / "met.md").read_text()
    report.update(ci_low=-0.01)
    lab_bar.write_markdown(report, tmp_path / "ci.md")
    assert "**not met**" in (tmp_path / "ci.md").read_text()


def test_a_diagnosis_on_the_tune_split_says_so_in_its_table_and_its_regenerate_line(tmp_path):
    """Builds are chosen between on tune instances (tables report test): the markdown must not call them test."""
    import json

    import lab_diagnosis

    archive = Path(__file__).resolve().parents[1] / "results" / "archive"  # tables of earlier bases
    report = json.loads((archive / "lab_diagnosis_v1.json").read_text())
    lab_diagnosis.write_markdown({**report, "split": "tune"}, tmp_path / "lab_diagnosis_x.md")
    text = (tmp_path / "lab_diagnosis_x.md").read_text()
    assert "Tune instances, " in text and "--split tune --name x`" in text and "Test instances" not in text


def test_cross_method_rows_pair_every_method_against_the_base_and_grpo_on_the_same_prompts():
    """experiments/cross_method.py's table on hand-made scores: the base scores 0 everywhere, GRPO 1, LSP 1 on
    the reasoning prompts only (two seeds: 1 and 0 elsewhere, so 0.5 there); each gain is exact, its interval
    collapses where every prompt moves alike, and GRPO's own row has no gain against itself."""
    from cross_method import reasoning_families, summary_rows

    from langplay.evaluation.tinyworld import held_out_tasks

    tasks = held_out_tasks(1, seed=123)
    reasoning = [i for i, t in enumerate(tasks) if t.family in reasoning_families()]
    assert 0 < len(reasoning) < len(tasks)
    lsp = lambda other: [1.0 if i in reasoning else other for i in range(len(tasks))]  # noqa: E731
    run = lambda method, scores, seed=0: {"method": method, "seed": seed, "scores": scores,  # noqa: E731
                                          "train_minutes": 1.0, "worked": seed, "hard_length": 10 * (1 + seed)}
    results = {"base": [0.0] * len(tasks), "runs": [
        run("GRPO (data + judge)", [1.0] * len(tasks)), run("LSP (none)", lsp(1.0)), run("LSP (none)", lsp(0.0), 1)]}
    rows = {row[0]: row for row in summary_rows(results, reasoning)}
    assert set(rows) == {"GRPO", "LSP"} and rows["GRPO"][1] == "data + judge"
    assert rows["GRPO"][3] == "+1.000 [+1.000, +1.000]" and rows["GRPO"][4] == "—"
    share = 1 - 0.5 * (len(tasks) - len(reasoning)) / len(tasks)  # LSP's mean score over the two seeds
    assert rows["LSP"][2] == f"{share:.3f}" and rows["LSP"][5] == "+1.000 [+1.000, +1.000]"
    assert rows["LSP"][6] == "+0.000 [+0.000, +0.000]" and rows["LSP"][4].startswith(f"{share - 1:+.3f}")
    assert rows["LSP"][8:] == ["0.50", "15"] and rows["GRPO"][8:] == ["0.00", "10"]  # means over the seeds


def test_jepo_and_cross_method_scripts_rewrite_their_committed_markdown(tmp_path):
    """jepo_tinyworld.py (the test table and a tuning one) and cross_method.py from their committed JSON and
    written readings: the committed markdown to the byte."""
    import json
    import shutil

    import cross_method
    import jepo_tinyworld

    results = Path(__file__).resolve().parents[1] / "results"
    for name in ["jepo_tinyworld_tune_lr5e-5", "jepo_tinyworld", "cross_method"]:
        if (results / f"{name}_reading.md").is_file():
            shutil.copy(results / f"{name}_reading.md", tmp_path)
        saved = json.loads((results / f"{name}.json").read_text())
        if name.startswith("jepo"):
            jepo_tinyworld.write_markdown(saved, tmp_path, name)
        else:
            cross_method.write_markdown(saved, tmp_path / f"{name}.md")
        assert (tmp_path / f"{name}.md").read_text() == (results / f"{name}.md").read_text(), name


def test_regenerate_script_runs_each_tables_own_regenerate_line_and_misses_none():
    """experiments/regenerate.sh re-measures every table on the shipped base after a rebuild: each of its lines
    (with the shipped base's name, v2h-s1) is the regenerate line a committed table prints, and each of those tables'
    lines is in the script, so neither drifts from the other."""
    import re

    root = Path(__file__).resolve().parents[1]
    script = (root / "experiments" / "regenerate.sh").read_text()
    lines = {line.replace("$py ", "python ").replace('"$name-lr2e-4"', "v2h-s1-lr2e-4").replace('"$name"', "v2h-s1")
             for line in script.splitlines() if line.startswith("$py experiments/")}
    tables = ["lab_diagnosis_v2h-s1", "lab_bar_tune_v2h-s1-lr2e-4", "lab_bar", "lab_bar_p160", "lsp_tinyworld",
              "lsp_tinyworld_long", "jepo_tinyworld_tune_lr5e-5", "jepo_tinyworld_tune_lr2e-4", "jepo_tinyworld",
              "irl_tinyworld", "cross_method", "lsp_steered", "jepo_focused", "smollm2_eval",
              "smollm2_lsp_game"]
    printed = {name: re.search(r"`(python experiments/[^`]*)`", (root / "results" / f"{name}.md").read_text()).group(1)
               for name in tables}
    assert lines == set(printed.values()), (lines ^ set(printed.values()))
    assert len(lines) == len(tables)


def test_the_long_lsp_run_compares_with_the_short_run_only_on_the_same_prompts(tmp_path):
    """lsp_tinyworld.py's long run (--name lsp_tinyworld_long) from its committed JSON, the short run's beside it:
    the committed markdown to the byte, with LSP over LSP-Zero and each method against its 40-step run. When the
    short run drew other test prompts, only the comparison within the long run is left."""
    import json
    import shutil

    import lsp_tinyworld

    results = Path(__file__).resolve().parents[1] / "results"
    for name in ["lsp_tinyworld.json", "lsp_tinyworld_long_reading.md"]:
        shutil.copy(results / name, tmp_path)
    long = json.loads((results / "lsp_tinyworld_long.json").read_text())
    lsp_tinyworld.write_markdown(long, tmp_path)
    written = (tmp_path / "lsp_tinyworld_long.md").read_text()
    assert written == (results / "lsp_tinyworld_long.md").read_text()
    assert "| LSP over LSP-Zero at 200 steps |" in written and "| LSP-Zero at 200 steps over 40 " in written
    short = json.loads((tmp_path / "lsp_tinyworld.json").read_text())
    short["base"]["prompt_scores"][0] += 1.0  # another draw of test prompts: not comparable prompt by prompt
    (tmp_path / "lsp_tinyworld.json").write_text(json.dumps(short))
    lsp_tinyworld.write_markdown(long, tmp_path)
    written = (tmp_path / "lsp_tinyworld_long.md").read_text()
    assert "| LSP over LSP-Zero at 200 steps |" in written and " over 40 " not in written


def test_the_steered_table_pairs_each_run_with_the_base_and_lsp_with_grpo_and_lsp_zero(tmp_path):
    """lsp_steered.py's tables on hand-made per-prompt scores: the base 0 on every prompt, GRPO 1, the preset's
    LSP 1 on seed 0 and 0 on seed 1 (0.5 a prompt), LSP-Zero 0.5; gains, win rates and comparisons are exact.
    Steering counts only the challenger's queries of the last 10 steps that parse as the family's tasks."""
    import json

    import lsp_steered

    prompts, others = 4, 3
    run = lambda name, seed, value, steering=None: {  # noqa: E731
        "name": name, "seed": seed, "near_greedy": [value] * prompts, "sampled": [value] * prompts,
        "others": [0.0] * others, "steering": steering}
    results = {"settings": {"seeds": [0, 1], "steps": 60}, "family": "count", "tune_scores": {"count": 0.5},
               "base": {"near_greedy": [0.0] * prompts, "sampled": [0.0] * prompts, "others": [0.0] * others},
               "runs": [run(lsp_steered.GRPO, 0, 1.0), run(lsp_steered.PRESET_ALPHA, 0, 1.0, 0.75),
                        run(lsp_steered.PRESET_ALPHA, 1, 0.0, 0.25), run("LSP-Zero, alpha_Ch 0.03", 0, 0.5, 1.0)]}
    rows = {row[0]: row for row in lsp_steered.gain_rows(results)}
    assert list(rows) == [lsp_steered.PRESET_ALPHA, "LSP-Zero, alpha_Ch 0.03", lsp_steered.GRPO]  # RUNS' order
    assert rows[lsp_steered.GRPO][1:] == ["+1.000 [+1.000, +1.000]", "1.000", "+1.000 [+1.000, +1.000]",
                                          "+0.000 [+0.000, +0.000]", "—"]
    assert rows[lsp_steered.PRESET_ALPHA][1:3] == ["+0.500 [+0.500, +0.500]", "1.000"]
    assert rows[lsp_steered.PRESET_ALPHA][5] == "0.50"
    comparisons = {row[0]: row[1:] for row in lsp_steered.comparison_rows(results)}
    no_change = "+0.000 [+0.000, +0.000]"
    assert comparisons == {"LSP (the preset) over GRPO on data": ["-0.500 [-0.500, -0.500]"] * 2 + [no_change],
                           "LSP over LSP-Zero": [no_change] * 3}
    lsp_steered.write_markdown(results, tmp_path)
    assert "# Self-play steered to one family (tinyworld, `count`)" in (tmp_path / "lsp_steered.md").read_text()
    assert_rewrites_committed_table(lsp_steered, "lsp_steered", tmp_path)

    queries = ["How many times does a appear in ab?", "Give the largest number in 1, 2.", "nonsense"]
    samples = [{"step": step, "query": queries[0] if step <= 50 else q} for step in range(1, 61) for q in queries]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    # steps 1-50 ask only `count` tasks: over the whole run 0.89 would land in `count`, over the last 10 steps 1/3
    assert lsp_steered.steering(tmp_path, "count") == 1 / 3 and lsp_steered.steering(tmp_path, "max") == 1 / 3
    (tmp_path / "samples.jsonl").write_text(json.dumps({"step": 1, "prompt": "p", "completion": "c"}) + "\n")
    assert lsp_steered.steering(tmp_path, "count") is None  # GRPO's samples: no queries


def test_the_focused_jepo_table_pairs_each_method_with_the_base_and_jepo_with_the_others(tmp_path):
    """jepo_focused.py's tables on hand-made per-prompt values: the base right on no prompt, JEPO-n on every prompt
    with seed 0 and none with seed 1 (0.5 a prompt), SFT on every prompt; NLL falls by 1 for JEPO-n only."""
    import jepo_focused

    focus = "spell (no verifier)"
    run = lambda method, seed, right, nll: {"focus": focus, "method": method, "seed": seed,  # noqa: E731
                                            "sampled": [right] * 3, "greedy": [right] * 3, "nll": [nll] * 3}
    results = {"settings": {"seeds": [0, 1], "steps": 60, "prompts": 3, "lr": 1e-4}, "levels": {focus: 3},
               "tune_accuracy": {focus: {"1": 0.1, "3": 0.5}},
               "base": {focus: {"sampled": [0.0] * 3, "greedy": [0.0] * 3, "nll": [2.0] * 3}},
               "runs": [run("JEPO-n", 0, 1.0, 1.0), run("JEPO-n", 1, 0.0, 1.0), run("SFT", 0, 1.0, 2.0)]}
    rows = {row[0]: row[1:] for row in jepo_focused.gain_rows(results, focus)}
    assert rows == {"SFT": ["+1.000 [+1.000, +1.000]"] * 2 + ["+0.000 [+0.000, +0.000]", "1"],
                    "JEPO-n": ["+0.500 [+0.500, +0.500]"] * 2 + ["-1.000 [-1.000, -1.000]", "2"]}
    versus = jepo_focused.comparison_rows(results, focus)
    assert versus == [["JEPO-n over SFT", "-0.500 [-0.500, -0.500]", "-0.500 [-0.500, -0.500]",
                       "-1.000 [-1.000, -1.000]"]]
    jepo_focused.write_markdown(results, tmp_path)
    assert "| JEPO-n over SFT |" in (tmp_path / "jepo_focused.md").read_text()
    assert_rewrites_committed_table(jepo_focused, "jepo_focused", tmp_path)


def test_the_steered_family_is_the_one_nearest_half_on_tune_and_the_shortcut_is_counted(tmp_path, monkeypatch):
    """choose_family asks for tune instances only and takes the score nearest 0.5 (count 0.45 over spell 0.58);
    answer_shortcut reads the late queries' most common answer and how often queries and answers are it."""
    import json

    import lsp_steered

    import langplay.evaluation.tinyworld as tinyworld

    scores = {"between": 0.9, "count": 0.45, "letters": 1.0, "max": 0.9, "multiply": 0.3, "spell": 0.58}
    splits = set()

    def fake_tasks(per_level, seed, families, split="test"):
        splits.add(split)
        return families

    monkeypatch.setattr(tinyworld, "held_out_tasks", fake_tasks)
    monkeypatch.setattr(tinyworld, "task_scores", lambda model, families: [scores[families[0]]])
    assert lsp_steered.choose_family("base") == ("count", scores) and splits == {"tune"}

    def sample(step, letter, text, answer):  # a count query whose answer is how often `letter` is in `text`
        return {"step": step, "query": f"How many times does {letter} appear in {text}?", "answer": answer}

    samples = [sample(1, "a", "ab", "1"), sample(2, "a", "bb", "1"), sample(3, "a", "aa", "2"),
               sample(4, "z", "ab", "0"), *(sample(step, "z", "abc", "0") for step in range(11, 20)),
               sample(20, "a", "ab", "0")]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    report = lsp_steered.answer_shortcut(tmp_path, "count")
    # steps 1-5: true answers 1, 0, 2, 0 (half are 0), the solver's 1, 1, 2, 0 (a quarter); steps 11-20: the
    # answer is 0 in 9 of 10 queries and the solver says 0 to all
    assert report == {"answer": "0", "queries_first": 0.5, "answers_first": 0.25, "queries_last": 0.9,
                      "answers_last": 1.0}


def assert_rewrites_committed_table(module, name: str, folder: Path) -> None:
    """`module.write_markdown` rewrites results/NAME.md from the committed NAME.json and reading, to the byte."""
    import json

    committed = Path(__file__).resolve().parents[1] / "results"
    (folder / f"{name}_reading.md").write_text((committed / f"{name}_reading.md").read_text())
    module.write_markdown(json.loads((committed / f"{name}.json").read_text()), folder)
    assert (folder / f"{name}.md").read_text() == (committed / f"{name}.md").read_text()


def test_the_smollm2_evaluation_rewrites_its_committed_markdown(tmp_path):
    """experiments/smollm2_eval.py from its committed JSON and reading: the committed markdown to the byte, with the
    regenerate line that experiments/regenerate.sh runs."""
    import json
    import shutil

    import smollm2_eval

    results = Path(__file__).resolve().parents[1] / "results"
    shutil.copy(results / "smollm2_eval_reading.md", tmp_path)
    saved = json.loads((results / "smollm2_eval.json").read_text())
    smollm2_eval.write_markdown(saved, tmp_path / "smollm2_eval.md")
    assert (tmp_path / "smollm2_eval.md").read_text() == (results / "smollm2_eval.md").read_text()
    assert saved["regenerate"] == "python experiments/smollm2_eval.py"
