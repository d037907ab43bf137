"""An evaluation of a model on a prompt file, the frame `langplay eval accuracy / likelihood / diversity` share:
the checks that fail before anything loads, the file's rows, the model (loaded when first used), its answers
(cached in the eval folder, so an interrupted run continues), and what it writes at the end: report.json,
report.txt (the table the command prints) and rows.jsonl. `table_text` is the console table every evaluation
prints, these three, the win rate and tinyworld's.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Callable

from langplay.evaluation.answers import (Decoding, answer_cache, check_backend, eval_folder, generate_answers,
                                         load_eval_policy, load_prompt_rows, require_model_source)
from langplay.files import atomic_write_text, write_json, write_jsonl


class FileEvaluation:
    """One evaluation (`kind`: accuracy, likelihood, diversity) of `model` on the prompt file `data`, writing into
    the eval folder `output` (default runs/eval-KIND). Made first: it checks the backend and the model source."""

    def __init__(self, kind: str, model, data, output=None, backend: str | None = None,
                 system_prompt: str | None = None, batch_size: int = 32, progress: bool = True):
        self.kind, self.model, self.data = kind, str(model), str(data)  # a Path works too
        self.output, self.backend, self.system_prompt = output, check_backend(backend), system_prompt
        self.batch_size, self.progress = batch_size, progress
        require_model_source(self.model, "model")
        self.rows: list[dict] = []
        self.prompts: list = []

    def load_rows(self, columns: list[str], prompt_column: str, subset: str | None, split: str,
                  limit: int | None) -> list[dict]:
        """The file's first `limit` rows, checked to have `columns`; their prompts are what `answers` answers."""
        self.rows = load_prompt_rows(self.data, columns, subset, split, limit)
        self.prompts = [row[prompt_column] for row in self.rows]
        return self.rows

    @cached_property
    def policy(self):
        return load_eval_policy(self.model)

    @cached_property
    def folder(self) -> Path:
        return eval_folder(self.output, self.kind)

    @cached_property
    def cache(self):
        return answer_cache(self.folder)

    def answers(self, decoding: Decoding, label: str, noise_keys: list[int] | None = None) -> list[list[str]]:
        """`decoding.n` answers to each prompt of the rows, from the folder's cache where a run wrote them."""
        return generate_answers(self.policy, self.model, self.prompts, decoding, self.cache, self.backend,
                                self.system_prompt, self.batch_size, self.progress, label, noise_keys=noise_keys)

    def finish(self, report: dict, render: Callable[[dict], str], rows: list[dict] | None = None) -> dict:
        """Write report.json, report.txt (`render(report)`) and (rows) rows.jsonl; the report, with its folder."""
        write_json(self.folder / "report.json", report)
        atomic_write_text(self.folder / "report.txt", render(report))
        if rows is not None:
            write_jsonl(self.folder / "rows.jsonl", rows)
        report["folder"] = str(self.folder)
        return report


def table_text(title: str, header: list[str], rows: list[list[str]], notes: list[str] = (),
               width: int = 120) -> str:
    """A console table (rich) as plain text, `notes` printed below it: the evaluation commands print it and save
    it beside their report. The first column is left-aligned (names), the others right-aligned (numbers)."""
    import io

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for index, column in enumerate(header):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(table)
    for note in notes:
        console.print(note)
    return console.export_text()
