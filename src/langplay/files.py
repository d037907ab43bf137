"""Files and folders written whole or not at all: what a crash, a kill or Ctrl-C leaves is the old one or the new one.

Every result langplay writes goes through `replaced`: the new file or folder is made under a hidden temporary name
beside it (`.NAME.tmp-PID`), then renamed over the old one in one step. `atomic_write_text`, `write_json`,
`write_jsonl` and `save_figure` are its usual cases; a checkpoint or an imported model is a folder written the same
way. `discard` deletes a folder so that no kill leaves part of it under its name.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temporary_path(path: Path) -> Path:
    """Where `replaced` writes `path` first: hidden, beside it, named by the process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextmanager
def replaced(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write a file or a folder to: when the block ends without an error it is
    renamed to `path` (an old folder there is discarded first), else deleted."""
    path = Path(path)
    tmp = temporary_path(path)
    remove(tmp)  # left by a killed process with the same id
    try:
        yield tmp
        if tmp.is_dir():
            discard(path)
        os.replace(tmp, path)
    finally:
        remove(tmp)


def remove(path: Path) -> None:
    """Delete a file or a folder, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a text file whole or not at all."""
    with replaced(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data, indent: int | None = 2) -> Path:
    """A JSON file (a report, a results file), written whole or not at all."""
    return atomic_write_text(path, json.dumps(data, indent=indent))


def write_jsonl(path: str | Path, rows) -> Path:
    """One JSON object a line (per-row results), written whole or not at all."""
    return atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """A matplotlib figure saved whole or not at all, in the format its name's suffix says (e.g. .png)."""
    path = Path(path)
    with replaced(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or None)
    return path


def discard(path: Path) -> None:
    """Delete a folder so that no kill can leave part of it under its name: rename it aside, then delete."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)
