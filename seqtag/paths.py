"""Checks that an output can be written, made before the work that produces it.

A prediction run that fails only after tagging the whole input, or a training run after its
first epoch, because the output path is a directory or lies under a file, loses that work.
"""

from __future__ import annotations

import os
from pathlib import Path

from seqtag.errors import OutputError


def check_output_file(path: str | os.PathLike[str], *, missing_folder_ok: bool = False) -> None:
    """Refuse a file path that cannot be written: a directory, or a folder that is missing
    (or, with ``missing_folder_ok``, one that cannot be created)."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target}: is a directory, expected a file name")
    folder = target.parent
    if missing_folder_ok:
        check_output_folder(folder)
        return
    if not folder.is_dir():
        raise OutputError(f"{target}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{target}: cannot write in {folder}")


def check_output_folder(path: str | os.PathLike[str]) -> None:
    """Refuse a folder that cannot be created or written (missing folders are created later)."""
    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{folder}: cannot be a folder, {existing} is a file")
    if not os.access(existing, os.W_OK):
        raise OutputError(f"{folder}: cannot write in {existing}")
