"""What the tinyworld experiments share: the common options of their command lines, and their markdown tables
(the mean ± sd cells, rows from column specs, and the table lines). (The scripts run as `python
experiments/NAME.py`, so this folder is on their import path.)"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def experiment_parser(work: str, description: str | None = None) -> argparse.ArgumentParser:
    """--seeds, --work (runs/WORK by default), --results and --report-only; each script adds its own options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / work)
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--report-only", action="store_true", help="rewrite the tables and plots from the saved JSON")
    return parser


def finite(values) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def mean_of(values) -> float:
    """The mean of the finite values; NaN when there are none."""
    values = finite(values)
    return statistics.mean(values) if values else float("nan")


def mean_sd(values) -> str:
    """'mean ± sd' over the finite values (one value: itself; none: a dash)."""
    values = finite(values)
    if not values:
        return "—"
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def gain_cell(runs: list[dict], key: str, reference: float) -> str:
    """'+mean ± sd' of run[key] - reference over the runs (one run: its difference alone)."""
    values = [r[key] - reference for r in runs]
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):+.3f}{spread}"


def paired_gain(trained: list[list[float]], reference: list[list[float]]) -> dict:
    """The gain of `trained` over `reference` on the same prompts: each side's per-prompt values averaged over its
    seeds, then the mean per-prompt difference with its 95% bootstrap interval over prompts."""
    from langplay.evaluation.metrics import bootstrap_interval

    differences = [statistics.mean(run[i] for run in trained) - statistics.mean(run[i] for run in reference)
                   for i in range(len(reference[0]))]
    low, high = bootstrap_interval(differences)
    return {"gain": statistics.mean(differences), "ci_low": low, "ci_high": high}


def interval_cell(gain: dict) -> str:
    """'+gain [low, high]' of a paired_gain result."""
    return f"{gain['gain']:+.3f} [{gain['ci_low']:+.3f}, {gain['ci_high']:+.3f}]"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines: the header, the |---| rule and one line per row (cells already formatted)."""
    uneven = [row for row in rows if len(row) != len(header)]
    if uneven:  # a row with a missing or extra cell would shift every column after it, silently
        raise ValueError(f"table rows need {len(header)} cells (the header's), got {[len(r) for r in uneven]}")
    return [table_line(header), "|" + "---|" * len(header), *(table_line(row) for row in rows)]


def table_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def dig(report: dict, path: str):
    """The value at a '/'-separated path of a results dict ("runs/0/nll": report["runs"][0]["nll"], an integer
    indexing a list); None where a key is missing, so the cell drops it."""
    value = report
    for key in path.split("/"):
        value = value[int(key)] if isinstance(value, list) else value.get(key) if isinstance(value, dict) else None
    return value


def cells(reports: list[dict], columns: dict, t: str = "", cell=mean_sd) -> list[str]:
    """A table row's cells from column specs: per column (header -> a `dig` path, "{T}" in it replaced by t, or a
    function of (report, t)), `cell` (mean ± sd by default) of its values over the reports (one per seed)."""
    value = lambda r, column: column(r, t) if callable(column) else dig(r, column.format(T=t))  # noqa: E731
    return [cell([value(r, column) for r in reports]) for column in columns.values()]


def saved_results(args, path: Path) -> dict | None:
    """The results saved at `path` with --report-only; otherwise None, once a fresh run is set up (the package's
    source on the import path, libraries quiet, the results folder made)."""
    if args.report_only:
        return json.loads(path.read_text())
    sys.path.insert(0, str(ROOT / "src"))
    from langplay.console import quiet_libraries

    quiet_libraries()
    args.results.mkdir(parents=True, exist_ok=True)
    return None


def measured(args, path: Path, measure, write_markdown) -> dict:
    """The report at `path`: with --report-only the saved one, else `measure()` (2 torch threads) with its
    provenance, saved; then its markdown beside it, printed."""
    report = saved_results(args, path)
    if report is None:
        import torch

        torch.set_num_threads(2)
        report = measure()
        report["provenance"] = provenance()
        path.write_text(json.dumps(report, indent=1))
    write_markdown(report, path.with_suffix(".md"))
    print(path.with_suffix(".md").read_text())
    return report


def run_folder(work: Path, name: str, config, data_key: str = "") -> Path:
    """The folder of one training run, keyed by a hash of everything that defines it: the resolved config, the
    data (`data_key`: how the script drew it) and the starting model's weights. Changing --steps, --lr or the
    base model gives a new folder, never a reused old model. Sets config.run.output_dir to it; a folder left by
    an interrupted run is cleared so the run starts again."""
    import hashlib
    import shutil

    resolved = config.model_dump(mode="json")
    resolved["run"]["output_dir"] = ""
    from langplay.tinyworld.base import weights_sha256

    model = Path(config.model.name_or_path)
    model_key = weights_sha256(model) if (model / "model.safetensors").is_file() else config.model.name_or_path
    digest = hashlib.sha256(json.dumps([resolved, data_key, model_key], sort_keys=True).encode()).hexdigest()[:10]
    out = work / f"{name}-{digest}"
    if out.exists() and not finished(out):
        shutil.rmtree(out)
    config.run.output_dir = str(out)
    return out


def finished(out: Path) -> bool:
    return (out / "final" / "model.safetensors").is_file()


def run_metrics(out: Path) -> list[dict]:
    """The metrics a training run logged, one dict a step (and one an evaluation), from its metrics.jsonl."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def cpu_model() -> str:
    """The CPU as lscpu names it ("unknown" where lscpu is missing): compare timings only within one CPU."""
    import re
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    found = re.search(r"Model name:\s*(.+)", out)
    return found.group(1).strip() if found else "unknown"


def provenance() -> dict:
    """What a results file needs to be traced: the commit (and whether the tree had changes), library
    versions, the machine and the date."""
    import datetime
    import os
    import platform
    import subprocess

    import torch
    import transformers

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain", "src", "experiments")),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, threads {torch.get_num_threads()}",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
