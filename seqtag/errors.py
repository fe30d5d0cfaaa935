"""User-facing errors.

Everything a user can get wrong (a malformed corpus, a vector file of the wrong shape, a
checkpoint that is not ours, a command line that does not parse) raises a subclass of
:class:`SeqtagError`. The CLI prints such an error as one line and exits non-zero, so the
message itself must say what to fix.
"""

from __future__ import annotations

from os import PathLike


class SeqtagError(Exception):
    """Base class of errors caused by user input rather than by a bug in seqtag."""


class _FileError(SeqtagError, ValueError):
    """A problem in one file, shown as ``PATH:LINE: message`` (``PATH: message`` without a line).

    Args:
        path: the file at fault.
        line: the 1-based line at fault, or ``None`` when no single line is (a missing file, a
            binary file, a count that disagrees with the whole file).
        message: what is wrong and what was expected.
    """

    def __init__(self, path: str | PathLike[str], line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class CorpusFormatError(_FileError):
    """A corpus file does not follow its format; names the file and the 1-based line."""


class VectorFormatError(_FileError):
    """A pretrained vector file cannot be read, or does not fit the model."""


class TagSchemeError(SeqtagError, ValueError):
    """A tag does not fit the chosen tagging scheme (for example ``X-PER`` or ``B-``)."""


class CheckpointError(SeqtagError, ValueError):
    """A file is not a seqtag checkpoint, or lacks what prediction needs."""


class ConfigError(SeqtagError, ValueError):
    """Settings that do not fit together (for example ``val_path`` with ``val_from_train``)."""


class CommandLineError(SeqtagError):
    """The command line or a config file does not parse.

    The CLI exits with status 2 for it, as argparse does.
    """


class OutputError(SeqtagError, OSError):
    """An output (predictions, checkpoints, exports) cannot be written where it was asked to."""
