"""seqtag uses torch, Lightning, torchmetrics and jsonargparse through their public API only, and
no module of seqtag reaches into another's private names.

Private means a single leading underscore. The allow-list below is short on purpose; each entry
says why no public way exists (yet).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "seqtag"
THIRD_PARTY = ("torch", "lightning", "torchmetrics", "jsonargparse", "pytorch_lightning")
#: Private hooks of those libraries: overriding one is using it, even where it is defined.
OVERRIDDEN = {"_load_from_state_dict", "_save_to_state_dict"}

#: (file relative to seqtag/, private name) -> why it is still used.
ALLOWED = {
    ("checkpoint/resume.py", "_should_check_val_fx"): (
        "Lightning has no public way to ask whether a validation follows the batch just "
        "trained; without it a step checkpoint before a validation cannot resume exactly "
        "(read with getattr: on a Lightning without it, resume behaves as Lightning's own)"
    ),
    ("checkpoint/resume.py", "_data_fetcher"): ("the argument that _should_check_val_fx needs"),
    ("metrics/summed.py", "_computed"): (
        "torchmetrics keeps the result of compute() there until the next update; the reports "
        "beside a score reuse the states compute() summed instead of joining every process a "
        "second time, which would hang when only rank zero writes them"
    ),
    ("metrics/summed.py", "_is_synced"): ("torchmetrics' flag that the states are synchronised"),
    ("models/tagger.py", "_load_from_state_dict"): (
        "torch's documented override point for a module's own loading (fills the temperature "
        "of checkpoints older than calibration); the public pre-hook needs torch >= 2.5"
    ),
    ("serving/server.py", "_shutdown_event"): (
        "LitServe's run() waits on it; setting it is how its own /shutdown endpoint stops the "
        "server gracefully, and the only way for a SIGTERM handler to do so without raising "
        "KeyboardInterrupt into run() (which skips its start-up cleanup and races its worker "
        "monitor); read with getattr, as it exists only once run() has started"
    ),
    ("prediction/progress_bar.py", "tqdm_progress"): (
        "Lightning's Tqdm subclass, for a prediction bar that looks like its other bars"
    ),
}


def _defined_here(tree: ast.AST) -> set[str]:
    """Private names a file defines: functions, classes, module and class attributes, and
    ``self._x`` attributes it sets."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if name.startswith("_")}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _uses(path: Path) -> set[str]:
    """Private names ``path`` takes from elsewhere."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    mine = _defined_here(tree) - OVERRIDDEN
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] in THIRD_PARTY or parts[0] == "seqtag":
                found |= {p for p in parts if _private(p)}
                found |= {a.name for a in node.names if _private(a.name)}
                if "tqdm_progress" in parts:
                    found.add("tqdm_progress")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if node.attr not in mine:
                found.add(node.attr)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and node.args[1].value not in mine
        ):
            found.add(node.args[1].value)
    return found


def test_no_private_names_of_other_modules_or_libraries():
    used = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        used |= {(relative, name) for name in _uses(path)}
    assert sorted(used - set(ALLOWED)) == []


def test_every_allowed_entry_is_still_needed():
    """An entry whose use is gone goes from the list too, so the list stays the truth."""
    used = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        used |= {(relative, name) for name in _uses(path)}
    assert sorted(set(ALLOWED) - used) == []
