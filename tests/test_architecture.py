"""The house's shape: packages by concern, imports that run one way, no circle.

The allowed order is written once, here (lowest first). A module may import its own package
and any package before it; imports under ``if TYPE_CHECKING:`` are annotations only and are
not counted. The package face (``seqtag/__init__.py`` and ``__main__.py``) may name anything.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "seqtag"

#: Lowest first. ``errors`` and ``options`` are the face's modules every package may use.
ORDER = (
    "errors",
    "options",
    "files",
    "data",
    "models",
    "metrics",
    "checkpoint",
    "runtime",
    "prediction",
    "calibration",
    "training",
    "integrations",
    "serving",
    "cli",
)
FACE = {"__init__", "__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of each runtime ``seqtag`` import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "seqtag" or node.module.startswith("seqtag."):
                found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("seqtag")]
    return found


def _graph() -> dict[str, list[tuple[str, list[str]]]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_top_level_holds_only_the_package_face():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "errors.py", "options.py"]
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert sorted(packages) == sorted(set(ORDER) - {"errors", "options"})


def test_every_subpackage_says_what_it_owns_and_may_import():
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent == PACKAGE:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "import" in doc.lower() and len(doc.splitlines()) >= 2, init


def test_imports_run_one_way():
    upward = []
    for module, imports in _graph().items():
        layer = _layer(module)
        if layer in FACE:
            continue
        for target, _ in imports:
            other = _layer(target)
            if other == "__init__":  # the face: __version__ and the lazy public names
                continue
            if ORDER.index(other) > ORDER.index(layer):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_import_circle():
    graph = defaultdict(set)
    for module, imports in _graph().items():
        for target, _ in imports:
            graph[module].add(target)
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in list(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_models_are_plain_torch():
    """``models/`` never imports Lightning, nor a private name of ``data/``."""
    for path in (PACKAGE / "models").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "lightning" not in text.replace("Lightning", ""), path
        for target, names in _imports(path):
            if target.startswith("seqtag.data"):
                assert not [n for n in names if n.startswith("_")], (path, target, names)


def test_a_checkpoint_written_before_the_redesign_loads_and_tags_the_same():
    """``tests/fixtures/before_redesign.ckpt`` was written by ``seqtag fit`` at commit 861c7ca
    (character CNN, CRF, with LightningCLI's ``_class_path`` and ``_instantiator``); the tags
    and confidences below are what that version's ``tag()`` gave."""
    from seqtag import SequenceTagger

    model = SequenceTagger.load_from_checkpoint(REPO / "tests/fixtures/before_redesign.ckpt")
    result = model.eval().tag([["The", "dog", "runs", "."], ["A", "cat"]])
    expected = [
        [
            ("VERB", 0.12645597755908966),
            ("VERB", 0.12596619129180908),
            ("VERB", 0.1265861690044403),
            ("VERB", 0.12652376294136047),
        ],
        [("PART", 0.12764357030391693), ("CCONJ", 0.12654531002044678)],
    ]
    assert [[tag for tag, _ in s] for s in result] == [[tag for tag, _ in s] for s in expected]
    for got, want in zip(result, expected, strict=True):
        assert [c for _, c in got] == pytest.approx([c for _, c in want], abs=1e-6)
