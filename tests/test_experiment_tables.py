"""experiments/common.py: the experiments' markdown table cells from column specs; irl_report.py's tables from them."""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from common import cells, dig, mean_of  # noqa: E402


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
