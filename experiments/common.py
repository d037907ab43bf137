"""What the tinyworld experiments share: the common options of their command lines, and the mean ± sd cells of
their tables. (The scripts run as `python experiments/NAME.py`, so this folder is on their import path.)"""

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


def saved_results(args, path: Path) -> dict | None:
    """The results saved at `path` with --report-only; otherwise None, once a fresh run is set up (the package's
    source on the import path, libraries quiet, the results folder made)."""
    if args.report_only:
        return json.loads(path.read_text())
    sys.path.insert(0, str(ROOT / "src"))
    from langplay.cli import quiet_libraries

    quiet_libraries()
    args.results.mkdir(parents=True, exist_ok=True)
    return None
