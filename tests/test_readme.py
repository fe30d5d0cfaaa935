"""The README's "Using seqtag in your own Lightning project" runs as written.

Every ```python block of that section is taken from README.md by its sub-heading and run with
``exec`` in a fresh namespace, in a temporary working folder (where Lightning writes
``lightning_logs/``). Only the ``substitutions`` fixture's replacements are made: the shipped EWT
files become the 300/100/101-sentence slices of the ``ewt_slice`` fixture, 15 epochs become 4,
``lr_find`` tries 20 rates instead of 100, and the quick-start checkpoint becomes the one the
first snippet wrote. The ``LightningCLI`` snippet is saved as ``main.py`` and started with the
README's own command line, plus ``--trainer.max_epochs=1``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

README = REPO / "README.md"
SECTION = "Using seqtag in your own Lightning project"
VECTORS = "data/vectors/w2v-en-100d-ewt.bin"
QUICKSTART_CHECKPOINT = "runs/ud_ewt_upos/checkpoints/best.ckpt"
#: The sentences of the prediction snippet's input file, ``my_text.txt``.
MY_TEXT = ["The cat sat on the mat .", "Hello world", "It rained in Boston yesterday ."]


def _split(text: str, level: str) -> dict[str, str]:
    """The parts of ``text`` under headings of one level (``##``, ``###``), by title."""
    parts = re.split(rf"^{level} (.+)$", text, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def _section(title: str) -> str:
    return _split(README.read_text(encoding="utf-8"), "##")[title]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def _snippets(language: str) -> dict[str, list[str]]:
    """The section's code blocks of one language, by sub-heading."""
    found = {
        title: _blocks(body, language) for title, body in _split(_section(SECTION), "###").items()
    }
    return {title: blocks for title, blocks in found.items() if blocks}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def substitutions(ewt_slice) -> dict[str, str]:
    """What the snippets say -> what the test runs (the checkpoint is added by ``trained``)."""
    return {
        "data/ud_en_ewt/en_ewt-ud-train.conllu.gz": str(ewt_slice["train"]),
        "data/ud_en_ewt/en_ewt-ud-dev.conllu.gz": str(ewt_slice["dev"]),
        "data/ud_en_ewt/en_ewt-ud-test.conllu.gz": str(ewt_slice["test"]),
        VECTORS: str(REPO / VECTORS),
        "max_epochs=15": "max_epochs=4",
        "lr_find(model, datamodule=dm)": "lr_find(model, datamodule=dm, num_training=20)",
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A temporary working folder holding ``my_text.txt``, for the whole module."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "my_text.txt").write_text("\n".join(MY_TEXT) + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield folder


def _run(title: str, substitutions: dict[str, str]) -> dict:
    """Run the one python snippet under ``### title``; return its namespace."""
    (code,) = _snippets("python")[title]
    for said, used in substitutions.items():
        code = code.replace(said, used)
    assert "data/ud_en_ewt" not in code and QUICKSTART_CHECKPOINT not in code, code
    namespace: dict = {"__name__": "readme_snippet"}
    exec(compile(code, f"README.md ({title})", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def trained(workdir, substitutions) -> dict:
    """The first snippet, run: its namespace; its checkpoint replaces the quick-start one."""
    namespace = _run("Training with a DataModule", substitutions)
    checkpoint = namespace["trainer"].checkpoint_callback.best_model_path
    assert Path(checkpoint).is_file()
    substitutions[QUICKSTART_CHECKPOINT] = checkpoint
    return namespace


def test_every_snippet_of_the_section_is_run_here():
    assert set(_snippets("python")) == {
        "Training with a DataModule",
        "Building from the spec, with your own dataloaders",
        "Plain `LightningCLI`",
        "Finding a learning rate",
        "Testing and predicting with a checkpoint",
        "Tagging from Python",
    }
    section = _section(SECTION)
    files = [f"data/ud_en_ewt/en_ewt-ud-{split}.conllu.gz" for split in ("train", "dev", "test")]
    for said in (*files, VECTORS, QUICKSTART_CHECKPOINT, "max_epochs=15", "lr_find(model, "):
        assert said in section, f"the README no longer says {said!r}: update the substitutions"


def test_fit_with_a_datamodule_trains_a_tagger(trained):
    assert trained["trainer"].current_epoch == 4
    assert trained["trainer"].callback_metrics["val_acc"] > 0.5
    ((tag, confidence), *_) = trained["model"].tag([["The", "cat", "sat", "."]])[0]
    assert tag == "DET" and 0 < confidence <= 1


def test_build_from_the_spec_and_fit_with_own_dataloaders(workdir, substitutions, capsys):
    namespace = _run("Building from the spec, with your own dataloaders", substitutions)
    parameters = int(capsys.readouterr().out.split()[0])  # printed before fit, from the spec
    assert parameters == sum(p.numel() for p in namespace["model"].parameters()) > 500_000
    assert namespace["trainer"].callback_metrics["val_acc"] > 0.4  # NOUN everywhere: 0.16


def test_plain_lightning_cli_trains_with_sgd(workdir, substitutions):
    (main_py,) = _snippets("python")["Plain `LightningCLI`"]
    (command,) = _snippets("bash")["Plain `LightningCLI`"]
    folder = workdir / "cli"
    folder.mkdir()
    (folder / "main.py").write_text(main_py, encoding="utf-8")
    args = [substitutions.get(arg, arg) for arg in shlex.split(command.replace("\\\n", " "))]
    assert args[:2] == ["python", "main.py"]
    overrides = [
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    result = subprocess.run(
        [sys.executable, *args[1:], *overrides],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (checkpoint,) = (folder / "lightning_logs").glob("version_*/checkpoints/*.ckpt")
    state = torch.load(checkpoint, weights_only=True)
    (group,) = state["optimizer_states"][0]["param_groups"]
    # SGD's (it has momentum) at a constant 0.1: Lightning's --optimizer, no scheduler.
    assert "momentum" in group and group["lr"] == 0.1 and state["lr_schedulers"] == []
    assert state["hyper_parameters"]["char_features"] == "cnn"


def test_lr_find_sets_the_rate_that_fit_then_uses(workdir, substitutions):
    namespace = _run("Finding a learning rate", substitutions)
    suggestion = namespace["finder"].suggestion()
    assert suggestion is not None and namespace["model"].hparams.lr == suggestion
    optimizer = namespace["trainer"].optimizers[0]
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["initial_lr"] == suggestion


def test_checkpoint_tests_and_predicts_in_input_order(trained, substitutions):
    namespace = _run("Testing and predicting with a checkpoint", substitutions)
    (scores,) = namespace["scores"]
    assert 0.5 < scores["test_acc"] <= 1
    sentences = namespace["sentences"]
    assert [s["index"] for s in sentences] == list(range(len(MY_TEXT)))
    assert [s["tokens"] for s in sentences] == [line.split() for line in MY_TEXT]
    tag_set = set(namespace["model"].vocabularies.tags)
    for sentence in sentences:
        assert len(sentence["tags"]) == len(sentence["confidences"]) == len(sentence["tokens"])
        assert set(sentence["tags"]) <= tag_set


def test_tag_takes_token_lists_or_strings_and_refuses_a_flat_list(trained, substitutions):
    namespace = _run("Tagging from Python", substitutions)
    tagger, tagged = namespace["tagger"], namespace["tagged"]
    assert tagger.tag([["The", "cat", "sat", "."], ["Hello", "world"]]) == tagged
    assert [len(sentence) for sentence in tagged] == [4, 2]
    assert tagged[0][0][0] == "DET" and tagged[0][3][0] == "PUNCT"
    with pytest.raises(TypeError, match="one sentence's tokens"):
        tagger.tag(["The", "cat", "sat", "."])
    with pytest.raises(TypeError, match="one string"):
        tagger.tag("The cat sat .")


def test_tagging_text_python_example_runs(trained, substitutions):
    (code,) = _blocks(_section("Tagging text"), "python")
    code = code.replace(QUICKSTART_CHECKPOINT, substitutions[QUICKSTART_CHECKPOINT])
    namespace: dict = {}
    exec(compile(code, "README.md (Tagging text)", "exec"), namespace)
    assert len(namespace["tagger"].tag([["The", "cat", "sat", "."]])[0]) == 4
