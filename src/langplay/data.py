"""Datasets from the Hub or local files, column checks, a resumable prompt stream, SFT encoding."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

from langplay.config import DataConfig
from langplay.errors import LangplayError, first_line

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
TINYWORLD = "tinyworld:"  # data.path: tinyworld:train (tune, test) names tinyworld's tasks: nothing to export first
TINYWORLD_ROWS = 4000  # rows of such a source (data.max_samples takes fewer, data.where some families)


def load_rows(path: str, subset: str | list[str] | None = None, split: str = "train", max_samples: int | None = None,
              where: dict | None = None):
    """A `datasets.Dataset` from a local JSON/JSONL/Parquet/CSV file, a Hub dataset name or a tinyworld source
    (`tinyworld_rows`). A list of subsets is loaded and concatenated (e.g. every MATH subject); `where` keeps the
    rows whose column equals a value (or is one of a list of values), e.g. {"question_type": "proof"}."""
    import datasets

    if isinstance(subset, list):
        parts = [load_rows(path, one, split, where=where) for one in subset]
        rows = datasets.concatenate_datasets(parts)
        return rows.select(range(min(max_samples, len(rows)))) if max_samples is not None else rows

    if not path:
        raise LangplayError("no dataset given: set data.path to a Hub dataset name or a local .jsonl/.parquet file")
    local = Path(path)
    try:
        if path.startswith(TINYWORLD):
            rows = tinyworld_rows(path)
        elif local.suffix in LOCAL_FORMATS:
            if not local.is_file():
                raise LangplayError(f"dataset file not found: {path}")
            if local.stat().st_size == 0 or not local.read_bytes().strip():
                raise LangplayError(f"dataset file {path} is empty")
            if local.suffix == ".jsonl":
                check_jsonl(local)
            rows = datasets.load_dataset(LOCAL_FORMATS[local.suffix], data_files=str(local), split="train")
        elif local.is_dir():
            rows = datasets.load_from_disk(str(local))
            rows = rows[split] if isinstance(rows, datasets.DatasetDict) else rows
        else:
            rows = datasets.load_dataset(path, subset, split=split)
    except LangplayError:
        raise
    except Exception as exc:  # datasets raises many kinds; the user needs one line
        raise LangplayError(f"cannot load dataset {path!r}: {first_line(exc)}") from None
    if where:
        require_columns(rows, list(where), f"dataset {path!r} (data.where)")
        wanted = {column: value if isinstance(value, list) else [value] for column, value in where.items()}
        rows = rows.filter(lambda row: all(row[c] in values for c, values in wanted.items()))
        if len(rows) == 0:
            raise LangplayError(f"dataset {path!r} ({split}): no row matches data.where={where}")
    if max_samples is not None:
        rows = rows.select(range(min(max_samples, len(rows))))
    if len(rows) == 0:
        raise LangplayError(f"dataset {path!r} ({split}) is empty")
    return with_alpaca_prompts(rows)


def tinyworld_rows(path: str):
    """`tinyworld:SPLIT`: TINYWORLD_ROWS task instances of that split (seed 0), family and level uniform, with the
    columns prompt, reference (a worked solution), answer, final (JEPO's a*), family, level and seed."""
    import datasets

    from langplay.tinyworld.datasets import task_rows
    from langplay.tinyworld.tasks import SPLITS

    split = path[len(TINYWORLD):]
    if split not in SPLITS:
        raise LangplayError(f"unknown tinyworld data source {path!r}: data.path takes "
                            + ", ".join(TINYWORLD + name for name in SPLITS))
    return datasets.Dataset.from_list(task_rows(split, TINYWORLD_ROWS))


ALPACA = ("instruction", "input")  # Alpaca's columns (and its many copies'): the task, and the text it is about


def with_alpaca_prompts(rows):
    """Alpaca-shaped rows gain the `prompt` a TRL user builds for them: the instruction alone leaves out the
    input ("Summarize the following text." without its text). Rows with a prompt of their own are as they are."""
    if "prompt" in rows.column_names or not set(ALPACA) <= set(rows.column_names):
        return rows
    return rows.add_column("prompt", [alpaca_prompt(*pair) for pair in zip(*(rows[c] for c in ALPACA))])


def alpaca_prompt(instruction, text):
    """Alpaca's format: the instruction, then its input after a blank line where there is one."""
    joined = isinstance(instruction, str) and isinstance(text, str) and text.strip()
    return f"{instruction}\n\n{text}" if joined else instruction


def check_jsonl(path: Path) -> None:
    """Name the first line of a JSONL file that is not a JSON object (datasets only says "an error occurred")."""
    import json

    with path.open(encoding="utf-8", errors="strict") as f:
        try:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise LangplayError(f"dataset file {path}, line {number}: not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise LangplayError(f"dataset file {path}, line {number}: a row must be a JSON object")
        except UnicodeDecodeError:
            raise LangplayError(f"dataset file {path} is not UTF-8 text") from None


def require_text(rows, columns: list[str], what: str = "dataset", chat_ok: bool = True) -> None:
    """Each of `columns` holds text (or, where `chat_ok`, a list of chat messages) in every row: no number, no
    null. Named with the first bad row, before anything trains."""
    for column in columns:
        for index, value in enumerate(rows[column]):
            if isinstance(value, str) or (chat_ok and isinstance(value, list) and value
                                          and all(isinstance(m, dict) and "content" in m for m in value)):
                continue
            shown = "null" if value is None else f"{value!r:.60} ({type(value).__name__})"
            raise LangplayError(f"{what}, row {index}: column {column!r} holds {shown}; it must hold text"
                                + (" or a list of chat messages" if chat_ok else ""))


def require_columns(rows, columns: list[str], what: str = "dataset",
                    hint: str = "map yours with data.prompt_column / data.completion_column") -> None:
    missing = [c for c in columns if c not in rows.column_names]
    if missing:
        raise LangplayError(f"{what} has no column {', '.join(map(repr, missing))}; it has "
                            f"{', '.join(rows.column_names)} ({hint})")


def load_dataset_for(config: DataConfig, columns: list[str]):
    rows = load_rows(config.path, config.subset, config.split, config.max_samples, config.where)
    require_columns(rows, columns, f"dataset {config.path!r}")
    if config.prompt_column == ALPACA[0] and ALPACA[1] in rows.column_names:
        warnings.warn(f"data.prompt_column={ALPACA[0]} leaves out the rows' {ALPACA[1]!r}: data.prompt_column=prompt "
                      "is the two joined, in Alpaca's format")
    return rows


class PromptStream:
    """Rows in a seeded order, reshuffled every epoch; `position` (rows served so far) is all its state."""

    def __init__(self, rows, seed: int = 0, shuffle: bool = True, position: int = 0):
        self.rows, self.seed, self.shuffle, self.position = rows, seed, shuffle, position
        self._epoch, self._order = -1, []

    def _order_of(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            order = list(range(len(self.rows)))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._epoch, self._order = epoch, order
        return self._order

    def take(self, count: int) -> list[dict]:
        batch = []
        for _ in range(count):
            epoch, index = divmod(self.position, len(self.rows))
            batch.append(self.rows[self._order_of(epoch)[index]])
            self.position += 1
        return batch


def sft_pair(row: dict, config: DataConfig) -> tuple[object, str]:
    """(prompt, target) of one SFT row: prompt/completion columns, or chat messages whose last turn is the target."""
    if config.messages_column:
        messages = row[config.messages_column]
        if not messages or messages[-1].get("role") != "assistant":
            raise LangplayError(f"column {config.messages_column!r}: the last message must be the assistant's")
        return messages[:-1], messages[-1]["content"]
    return row[config.prompt_column], row[config.completion_column]


def encode_sft(policy, prompt, target: str, system_prompt: str | None, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of the formatted prompt and of the target followed by EOS (the completion the loss is on)."""
    prompt_ids = policy.encode(policy.format_prompt(prompt, system_prompt))
    completion_ids = policy.encode(target) + [policy.tokenizer.eos_token_id]
    overflow = len(prompt_ids) + len(completion_ids) - max_length
    if overflow > 0:  # cut the prompt from the left first, then the target from the right
        cut = min(overflow, max(len(prompt_ids) - 1, 0))
        prompt_ids = prompt_ids[cut:]
        completion_ids = completion_ids[: max_length - len(prompt_ids)]
    return prompt_ids, completion_ids
