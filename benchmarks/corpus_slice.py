"""Slices of real corpora: the first N sentences of a (gzipped) corpus file, copied verbatim.

Benchmarks (``run.py --quick``, ``--scaling``) and the tests' fixtures train on the head of a
real corpus; seqtag itself never needs this, so it lives here rather than in
:mod:`seqtag.data.io.formats`. ``tests/conftest.py`` imports it from this folder, as the scripts
beside it do (by module name, with ``benchmarks/`` on ``sys.path``).
"""

from __future__ import annotations

import os
from pathlib import Path

from seqtag.data.io.text_files import open_text


def head_sentences(
    source: str | os.PathLike[str], target: str | os.PathLike[str], count: int
) -> Path:
    """Copy the first ``count`` blank-line-separated sentences of a corpus (``.gz`` read too).

    The blocks are copied verbatim (comments and all), so any reader of the source format
    reads the slice; a corpus with fewer sentences is copied whole.
    """
    blocks: list[str] = []
    current: list[str] = []
    for _, line in open_text(source):
        if line.strip():
            current.append(line + "\n")
        elif current:
            blocks.append("".join(current))
            current = []
            if len(blocks) == count:
                break
    if current and len(blocks) < count:
        blocks.append("".join(current))
    target = Path(target)
    target.write_text("\n".join(blocks) + "\n", encoding="utf-8")
    return target
