"""Checks that an output can be written, made before the work that produces it.

A prediction run that fails only after tagging the whole input, or a training run after its
first epoch, because the output path is a directory or lies under a file, loses that work.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path

from seqtag.errors import OutputError

#: Room kept in a file name for what seqtag appends to it (``.rank0-of-8.partial``, ``.tmp``).
_SUFFIX_ROOM = 32


def check_output_file(path: str | os.PathLike[str], *, missing_folder_ok: bool = False) -> None:
    """Refuse a file path that cannot be written: a directory, a device or pipe, a name too
    long for the file system, or a folder that is missing (or, with ``missing_folder_ok``, one
    that cannot be created).

    Outputs are written beside their target and renamed over it, whole or not at all; over
    ``/dev/null`` or a named pipe that rename would replace the device, so only regular files
    (or new names) are accepted.
    """
    target = Path(path)
    _check_name_lengths(target, _SUFFIX_ROOM)
    if target.is_dir():
        raise OutputError(f"{target}: is a directory, expected a file name")
    if target.is_symlink():
        raise OutputError(
            f"{target}: is a symbolic link, which writing the output and renaming it into place "
            "would replace; give the file it points to (seqtag predict writes to standard "
            "output when --prediction.output is not given)"
        )
    if target.exists() and not target.is_file():
        raise OutputError(
            f"{target}: is not a regular file (a device, pipe or socket), which writing the "
            "output and renaming it into place would replace; give a file name (seqtag predict "
            "writes to standard output when --prediction.output is not given)"
        )
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
    _check_name_lengths(folder, 0)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{folder}: cannot be a folder, {existing} is a file")
    if not os.access(existing, os.W_OK):
        raise OutputError(f"{folder}: cannot write in {existing}")


def _check_name_lengths(path: Path, room: int) -> None:
    """Every component of ``path`` fits the file system's name limit (the last with ``room``
    to spare), checked now rather than when the first file is written."""
    existing = path.parent
    while not _exists(existing) and existing != existing.parent:
        existing = existing.parent
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in path.parts:
        spare = room if part == path.name else 0
        if len(os.fsencode(part)) + spare > limit:
            raise OutputError(
                f"{_shortened(str(path), 60)}: the name {_shortened(part, 20)} is "
                f"{len(os.fsencode(part))} bytes long; this file system allows {limit - spare} here"
            )


def _exists(path: Path) -> bool:
    """``path.exists()`` that answers False where the name itself is refused (too long)."""
    try:
        return path.exists()
    except OSError:
        return False


def _shortened(text: str, keep: int) -> str:
    """``text`` cut to ``keep`` characters and ``...`` when longer (a 300-byte name in a message
    would hide what the message says)."""
    return text if len(text) <= keep else text[:keep] + "..."


def write_text_atomically(path: Path, text: str) -> None:
    """``text`` as ``path``, whole or not at all: written beside it, synced, renamed into place.

    For the small records a resumed run reads back (progress, uncertain sentences) and the
    files written once at the end; a kill leaves the old file or the new one, never a part.
    """
    try:
        with replaced_atomically(path) as temporary, open(temporary, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({err.strerror or err})") from None


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A new empty file beside ``path`` to write; renamed over ``path`` when the block ends.

    The file is created under a fresh random name (never one that exists, so never through a
    symbolic link someone left there), with the mode a plain ``open`` would give. If the block
    raises, it is removed and ``path`` is left as it was: a failed write never leaves half a
    file over an existing one.
    """
    target = Path(path)
    temporary = _create_beside(target)
    try:
        with contextlib.suppress(OSError):  # an existing file keeps its mode, as with open()
            os.chmod(temporary, target.stat().st_mode & 0o777)
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_folder(target.parent)  # the rename itself survives a power loss


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows: folders cannot be opened
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _create_beside(target: Path) -> Path:
    """Create ``.NAME.RANDOM.tmp`` next to ``target`` exclusively (``O_EXCL``, no links)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    while True:
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(temporary, flags, 0o666))  # 0o666 less the umask, as open() gives
            return temporary
        except FileExistsError:
            continue


def same_file(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: the same name, a symbolic link to it, a hard link.

    ``os.path.samefile`` (device and inode) where both exist; otherwise the resolved names,
    so that a file not yet written compares by where it would be.
    """
    try:
        if os.path.exists(first) and os.path.exists(second):
            return os.path.samefile(first, second)
    except OSError:
        pass
    return os.path.realpath(first) == os.path.realpath(second)


def refuse_same_file(
    output: str | os.PathLike[str],
    inputs: Mapping[str, str | os.PathLike[str] | None],
    option: str = "--output",
) -> None:
    """Refuse an output that is one of the command's inputs, however it is spelled.

    Writing an output replaces its file; when that file is the checkpoint (or config, or data)
    the command reads, the input is lost. A symbolic or hard link to the input counts as the
    input.

    Args:
        output: the file the command would write.
        inputs: what each input is (``"the checkpoint being exported (--ckpt_path)"``) to its
            path; ``None`` paths are skipped.
        option: the option that chose ``output``, named in the message.

    Raises:
        OutputError: ``OUTPUT: is WHAT, which writing it would destroy; give another OPTION``.
    """
    for what, source in inputs.items():
        if source is not None and same_file(output, source):
            raise OutputError(
                f"{output}: is {what}, which writing it would destroy; give another {option}"
            )
