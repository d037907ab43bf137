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

    results = Path(__file__).resolve().parents[1] / "results"
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
