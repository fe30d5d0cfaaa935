"""Running the code blocks of README.md and docs/*.md as a reader would, top to bottom.

A page's ```python and ```bash blocks run in order in one sandbox: a temporary folder laid out
like a clone of the repository (see :func:`make_sandbox`). A ```bash block runs with
``bash -e -o pipefail``, its ``seqtag`` and ``python`` those of the environment running the
tests; a ```python block runs with ``exec`` in a fresh namespace, in the sandbox, unless its
first line is a file name comment (``# main.py``): it is then written to that file, which a
later block of the page runs. Substitutions (what the page says -> what the test runs) are
made as given, and each must still occur in its page, so that a page that changes keeps its
test honest. Other fences (```text, ```yaml) are shown, not run; ```yaml blocks must parse.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO

#: The fences that are run; every other block must use one of SHOWN.
RUN = ("python", "bash")
SHOWN = ("text", "yaml")
#: Where a python block says which file it is, for a later block to run.
FILE_COMMENT = re.compile(r"# ([\w.-]+\.py)")
#: Every config in the sandbox trains this many epochs, but the demo's, which runs as written.
SANDBOX_EPOCHS = 1
TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str
    heading: str
    language: str
    code: str
    line: int


@dataclass
class Ran:
    """A block as it ran: the code after substitutions, and what came of it."""

    block: Block
    code: str
    stdout: str = ""
    namespace: dict[str, Any] = field(default_factory=dict)


def pages() -> list[Path]:
    """README.md and every page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page``, with the heading it stands under."""
    found, heading, fence, start, lines = [], "", None, 0, []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if fence is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif line.startswith("```"):
                fence, start, lines = line[3:].strip(), number, []
        elif line == "```":
            name = str(page.relative_to(REPO))
            found.append(Block(name, heading, fence, "\n".join(lines) + "\n", start))
            fence = None
        else:
            lines.append(line)
    assert fence is None, f"{page}:{start}: the block is never closed"
    return found


def runnable(page: Path) -> list[Block]:
    return [block for block in blocks(page) if block.language in RUN]


def check_shown_blocks(page: Path) -> None:
    """Blocks that are not run are text or YAML that parses; nothing escapes by its fence."""
    for block in blocks(page):
        where = f"{block.page}:{block.line}"
        assert block.language in RUN + SHOWN, f"{where}: fence {block.language!r} is never run"
        if block.language == "yaml":
            assert isinstance(yaml.safe_load(block.code), dict), where


def _gzip_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(gzip.compress(source.read_bytes(), mtime=0))


def make_sandbox(folder: Path, ewt: dict[str, Path] | None = None) -> Path:
    """A folder laid out like a clone, to run a page's blocks in.

    - ``configs/``: copies of the shipped configs, each set to train ``SANDBOX_EPOCHS``
      epochs, except ``configs/demo.yaml``, which is copied unchanged;
    - ``data/``: the shipped data, or, with ``ewt`` (the ``ewt_slice`` fixture), the same
      file names holding its 300/100/101-sentence slices of the EWT splits;
    - ``examples/``, ``Makefile`` and ``pyproject.toml`` (linked), and ``.venv``: the
      environment running the tests.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "configs", folder / "configs")
    for config in (folder / "configs").glob("*.yaml"):
        if config.name == "demo.yaml":
            continue
        settings = yaml.safe_load(config.read_text(encoding="utf-8"))
        settings["trainer"]["max_epochs"] = SANDBOX_EPOCHS
        config.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    if ewt is None:
        (folder / "data").symlink_to(REPO / "data")
    else:
        (folder / "data").mkdir()
        (folder / "data" / "vectors").symlink_to(REPO / "data" / "vectors")
        for split, short in (("train", "train"), ("dev", "dev"), ("test", "test")):
            _gzip_copy(ewt[short], folder / "data" / "ud_en_ewt" / f"en_ewt-ud-{split}.conllu.gz")
    for name in ("examples", "Makefile", "pyproject.toml"):
        (folder / name).symlink_to(REPO / name)
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


def _environment() -> dict[str, str]:
    bin_folder = str(Path(sys.executable).parent)
    path = f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_bash(code: str, cwd: Path, where: str) -> str:
    """Run ``code`` as a bash script in ``cwd``; its standard output. Fails on any error."""
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", code],
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if result.returncode != 0:
        pytest.fail(f"{where} exited {result.returncode}:\n{code}\n{result.stderr[-4000:]}")
    return result.stdout


def run_python(code: str, cwd: Path, where: str) -> tuple[dict[str, Any], str]:
    """``exec`` ``code`` in a fresh namespace in ``cwd``; the namespace and what it printed."""
    namespace: dict[str, Any] = {"__name__": "doc_block"}
    before, printed = Path.cwd(), io.StringIO()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(code, where, "exec"), namespace)
    finally:
        os.chdir(before)
    return namespace, printed.getvalue()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now: a page that starts a server (``seqtag serve --port
    8000 &``) is run with it substituted, so that a busy 8000 cannot fail the test."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def substitute(code: str, substitutions: dict[str, str]) -> str:
    for said, used in substitutions.items():
        code = code.replace(said, used)
    return code


def run_page(page: Path, sandbox: Path, substitutions: dict[str, str] | None = None) -> list[Ran]:
    """Run every python and bash block of ``page`` in order in ``sandbox``."""
    substitutions = substitutions or {}
    found = runnable(page)
    text = "".join(block.code for block in found)
    for said in substitutions:
        assert said in text, f"{page.name} no longer says {said!r}: update its substitutions"
    ran = []
    for block in found:
        where = f"{block.page}:{block.line} ({block.heading})"
        code = substitute(block.code, substitutions)
        done = Ran(block, code)
        named = FILE_COMMENT.fullmatch(code.splitlines()[0]) if block.language == "python" else None
        if named:
            (sandbox / named.group(1)).write_text(code, encoding="utf-8")
            later = "".join(b.code for b in found[found.index(block) + 1 :])
            assert named.group(1) in later, f"{where}: no later block runs {named.group(1)}"
        elif block.language == "python":
            done.namespace, done.stdout = run_python(code, sandbox, where)
        else:
            done.stdout = run_bash(code, sandbox, where)
        ran.append(done)
    return ran


def under(ran: list[Ran], heading: str) -> list[Ran]:
    """The blocks that ran under ``heading``."""
    found = [item for item in ran if item.block.heading == heading]
    assert found, f"no block ran under {heading!r}"
    return found
