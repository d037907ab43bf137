"""Files written whole or not at all: what a crash, a kill or Ctrl-C leaves is the old file or the new one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file whole or not at all: a temporary file beside it, then a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def discard(path: Path) -> None:
    """Delete a folder so that no kill can leave part of it under its name: rename it aside, then delete."""
    if not path.exists():
        return
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)
