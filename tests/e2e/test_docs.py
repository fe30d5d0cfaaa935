"""Every page under docs/ runs as written, top to bottom, each in a sandbox of its own.

A page's ```python and ```bash blocks run in order (see ``doc_blocks``) in a folder laid out
like a clone whose ``data/ud_en_ewt`` files hold 300/100/101-sentence slices of the EWT splits
(the ``ewt_slice`` fixture) and whose configs train one epoch. What a page takes as given is
put there first, as ``PAGES`` says:

- ``quickstart``: ``runs/ud_ewt_upos``, trained in such a sandbox by ``seqtag fit --config
  configs/ud_ewt_upos.yaml --trainer.max_epochs 4`` (what ``make quickstart`` trains);
- ``chunker``: ``runs/conll2000_chunking``, trained by ``seqtag fit --config
  configs/conll2000_chunking.yaml`` on a synthetic chunking corpus in the config's column
  layout (the CoNLL-2000 files are never copied), and ``new.txt``, more of it, to tag;
- ``corpus``: ``corpus.txt.gz`` and ``big.jsonl``, text to tag;
- ``my_text``: ``my_text.txt``, one sentence per line.

``SUBSTITUTIONS`` shortens training where a page trains for 15 epochs (lightning.md: 4 epochs
on the slices, one for its ``LightningCLI`` run, and 20 learning rates tried instead of 100).
"""

from __future__ import annotations

import gzip
import importlib
import json
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO
from doc_blocks import Ran, check_shown_blocks, free_port, make_sandbox, run_page, runnable, under

DOCS = REPO / "docs"
#: What each page takes as given (see the module docstring).
PAGES: dict[str, tuple[str, ...]] = {
    "architecture.md": (),
    "cli.md": (),
    "confidence.md": ("quickstart", "chunker"),
    "data.md": (),
    "lightning.md": ("quickstart", "my_text"),
    "scaling.md": (),
    "security.md": (),
    "serving.md": ("quickstart",),
    "tagging.md": ("quickstart", "corpus"),
}
#: A free port for serving.md's server (the page says 8000, which may be taken).
SERVE_PORT = str(free_port())
SUBSTITUTIONS: dict[str, dict[str, str]] = {
    "serving.md": {
        "--port 8000": f"--port {SERVE_PORT}",
        "127.0.0.1:8000": f"127.0.0.1:{SERVE_PORT}",
    },
    "lightning.md": {
        "max_epochs=15": "max_epochs=4",
        "--trainer.max_epochs 15": "--trainer.max_epochs 1",
        "lr_find(model, datamodule=dm)": "lr_find(model, datamodule=dm, num_training=20)",
    },
}
#: The lines tagging.md's printf writes into my_text.txt.
PRINTF_TEXT = ["The cat sat on the mat .", "It rained in Boston yesterday ."]
MY_TEXT = ["The cat sat on the mat .", "Hello world", "It rained in Boston yesterday ."]
QUICKSTART = Path("runs/ud_ewt_upos/checkpoints/best.ckpt")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _seqtag(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "seqtag", *args], cwd=cwd, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _chunks(rng: random.Random, count: int) -> str:
    """Sentences of noun, verb and prepositional chunks in CoNLL-2000's columns."""
    phrases = [["the", "dog"], ["a", "big", "cat"], ["every", "old", "red", "house"], ["it"]]
    sentences = []
    for _ in range(count):
        rows = []
        for chunk, words in (
            ("NP", rng.choice(phrases)),
            ("VP", [rng.choice(["sees", "likes", "finds"])]),
            ("PP", [rng.choice(["in", "on", "near"])]),
            ("NP", rng.choice(phrases)),
        ):
            rows += [f"{w} X {'B' if i == 0 else 'I'}-{chunk}" for i, w in enumerate(words)]
        sentences.append("\n".join([*rows, ". . O"]))
    return "\n\n".join(sentences) + "\n"


class Given:
    """What pages take as given, each made once, when first asked for."""

    def __init__(self, folder: Path, ewt: dict[str, Path]) -> None:
        self.folder, self.ewt, self.made = folder, ewt, {}

    def _sandbox(self, name: str) -> Path:
        return make_sandbox(self.folder / name / "seqtag", self.ewt)

    def quickstart(self) -> Path:
        sandbox = self._sandbox("quickstart")
        _seqtag(
            "fit", "--config", "configs/ud_ewt_upos.yaml", "--trainer.max_epochs", "4", cwd=sandbox
        )
        return sandbox / "runs" / "ud_ewt_upos"

    def chunker(self) -> Path:
        sandbox = self._sandbox("chunker")
        (sandbox / "chunks.txt").write_text(_chunks(random.Random(0), 200), encoding="utf-8")
        _seqtag(
            "fit",
            "--config",
            "configs/conll2000_chunking.yaml",
            "--data.train_path=chunks.txt",
            "--data.test_path=chunks.txt",
            "--data.val_from_train=40",
            "--data.vectors=data/vectors/w2v-en-100d-ewt.bin",
            "--trainer.max_epochs=3",
            cwd=sandbox,
        )
        return sandbox / "runs" / "conll2000_chunking"

    def put(self, need: str, sandbox: Path) -> None:
        if need in ("quickstart", "chunker"):
            if need not in self.made:
                self.made[need] = getattr(self, need)()
            shutil.copytree(self.made[need], sandbox / "runs" / self.made[need].name)
        if need == "chunker":
            (sandbox / "new.txt").write_text(_chunks(random.Random(1), 30), encoding="utf-8")
        if need == "corpus":
            lines = [" ".join(s) for s in _sentences(self.ewt["test"])]
            with gzip.open(sandbox / "corpus.txt.gz", "wt", encoding="utf-8") as corpus:
                corpus.write("\n".join(lines) + "\n")
            records = [{"id": i, "tokens": line.split()} for i, line in enumerate(lines[:40])]
            text = "".join(json.dumps(record) + "\n" for record in records)
            (sandbox / "big.jsonl").write_text(text, encoding="utf-8")
        if need == "my_text":
            (sandbox / "my_text.txt").write_text("\n".join(MY_TEXT) + "\n", encoding="utf-8")


def _sentences(conllu: Path) -> list[list[str]]:
    """The token forms of a small CoNLL-U file, sentence by sentence."""
    sentences, tokens = [], []
    for line in conllu.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if not line.strip():
            if tokens:
                sentences.append(tokens)
            tokens = []
        elif not line.startswith("#") and fields[0].isdigit():
            tokens.append(fields[1])
    return sentences + ([tokens] if tokens else [])


@pytest.fixture(scope="module")
def docs(tmp_path_factory, ewt_slice) -> Callable[[str], tuple[Path, list[Ran]]]:
    """``docs(page)``: the page's sandbox and its blocks as they ran (each page runs once)."""
    given = Given(tmp_path_factory.mktemp("given"), ewt_slice)
    done: dict[str, tuple[Path, list[Ran]]] = {}

    def run(page: str) -> tuple[Path, list[Ran]]:
        if page not in done:
            sandbox = make_sandbox(
                tmp_path_factory.mktemp(page.removesuffix(".md")) / "seqtag", ewt_slice
            )
            for need in PAGES[page]:
                given.put(need, sandbox)
            done[page] = sandbox, run_page(DOCS / page, sandbox, SUBSTITUTIONS.get(page))
        return done[page]

    return run


def test_every_page_is_run_here():
    assert sorted(p.name for p in DOCS.glob("*.md")) == sorted(PAGES)
    assert set(SUBSTITUTIONS) <= set(PAGES)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_block_of_the_page_runs(docs, page):
    check_shown_blocks(DOCS / page)
    _, ran = docs(page)
    assert [item.block for item in ran] == runnable(DOCS / page)


def test_pages_link_to_files_that_exist():
    for page in [REPO / "README.md", *DOCS.glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        for target in _links(text):
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.name} links to {target}, which does not exist"


def _links(text: str) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http", "#"))]


def test_every_module_path_the_pages_name_exists():
    """Dotted names (``seqtag.runtime.thread_policy.ThreadPolicy``) import, files exist."""
    for page in [REPO / "README.md", *DOCS.glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        for name in set(re.findall(r"\bseqtag(?:\.[A-Za-z_]\w*)+", text)):
            parts = name.split(".")
            found = max(i for i in range(1, len(parts) + 1) if _importable(".".join(parts[:i])))
            target = importlib.import_module(".".join(parts[:found]))
            for attribute in parts[found:]:
                target = getattr(target, attribute, None)
                assert target is not None, f"{page.name} names {name}, which does not exist"
        for path in set(re.findall(r"\bseqtag/[\w/]+\.py\b", text)):
            assert (REPO / path).is_file(), f"{page.name} names {path}, which does not exist"


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _conll(path: Path) -> list[list[list[str]]]:
    text = path.read_text(encoding="utf-8").strip()
    return [[row.split("\t") for row in part.splitlines()] for part in text.split("\n\n")]


def test_cli_settings_reach_the_optimizer_and_a_finished_run_resumes(docs):
    sandbox, _ = docs("cli.md")
    printed = yaml.safe_load((sandbox / "sgd.yaml").read_text(encoding="utf-8"))
    assert printed["optimizer"]["class_path"] == "torch.optim.SGD"
    state = torch.load(sandbox / "runs/ud_ewt_upos/checkpoints/last.ckpt", weights_only=True)
    (group,) = state["optimizer_states"][0]["param_groups"]
    assert "momentum" in group and state["lr_schedulers"][0]["step_size"] == 5
    assert state["epoch"] == 0  # one epoch, resumed at no cost
    assert list(sandbox.glob("runs/ud_ewt_upos/logs/version_*/confusion_matrix.png"))


def test_tagging_pages_outputs(docs):
    sandbox, ran = docs("tagging.md")
    tagged = _conll(sandbox / "tagged.conll")
    assert [[row[0] for row in s] for s in tagged] == [line.split() for line in PRINTF_TEXT]
    assert all(len(row) == 3 and 0 < float(row[2]) <= 1 for s in tagged for row in s)
    (python,) = under(ran, "From Python")
    first, *streamed = python.stdout.splitlines()
    assert first.count("(") == 4 and len(streamed) == 2
    with gzip.open(sandbox / "corpus.txt.gz", "rt", encoding="utf-8") as text:
        corpus = text.read().splitlines()
    corpus_tags = _conll(sandbox / "tagged_corpus.conll")
    assert [[row[0] for row in s] for s in corpus_tags] == [line.split() for line in corpus]
    records = [json.loads(line) for line in (sandbox / "tagged.jsonl").open(encoding="utf-8")]
    assert [r["id"] for r in records] == list(range(40))
    assert all(len(r["tags"]) == len(r["tokens"]) for r in records)
    for output in ("tagger.onnx", "tagger.pt"):
        vocab = json.loads((sandbox / f"{output}.vocab.json").read_text(encoding="utf-8"))
        assert (sandbox / output).stat().st_size > 0 and "DET" in vocab["tags"]


def test_confidence_page_calibrates_and_picks_sentences_to_annotate(docs):
    sandbox, _ = docs("confidence.md")
    calibrated = sandbox / "runs/ud_ewt_upos/checkpoints/best.calibrated.ckpt"
    state = torch.load(calibrated, weights_only=True)
    assert state["state_dict"]["tagger.temperature"].item() > 0
    records = [json.loads(line) for line in (sandbox / "tagged.jsonl").open(encoding="utf-8")]
    assert len(records) == 30 and all("spans" in r for r in records)
    spans = [span for r in records for span in r["spans"]]
    assert spans and all(s["confidence"] >= 0.9 for s in spans)
    assert {s["type"] for s in spans} <= {"NP", "VP", "PP"}
    assert (sandbox / "to_annotate.txt").is_file()
    picked = json.loads((sandbox / "to_annotate.txt.json").read_text(encoding="utf-8"))
    assert len(picked) == 30 and all(0 <= p["uncertainty"] <= 1 for p in picked)


def test_scaling_page_trains_with_two_processes(docs):
    sandbox, _ = docs("scaling.md")
    assert (sandbox / "runs/ud_ewt_upos/checkpoints/best.ckpt").is_file()


def _lightning(docs, heading: str) -> Ran:
    _, ran = docs("lightning.md")
    (found,) = [item for item in under(ran, heading) if item.block.language == "python"]
    return found


def test_lightning_fit_with_a_datamodule_trains_a_tagger(docs):
    namespace = _lightning(docs, "Training with a DataModule").namespace
    assert namespace["trainer"].current_epoch == 4
    assert namespace["trainer"].callback_metrics["val_acc"] > 0.5
    ((tag, confidence), *_) = namespace["model"].tag([["The", "cat", "sat", "."]])[0]
    assert tag == "DET" and 0 < confidence <= 1


def test_lightning_build_from_the_spec_with_own_dataloaders(docs):
    ran = _lightning(docs, "Building from the spec, with your own dataloaders")
    parameters = int(ran.stdout.split()[0])  # printed before fit, from the spec
    assert parameters == sum(p.numel() for p in ran.namespace["model"].parameters()) > 500_000
    assert ran.namespace["trainer"].callback_metrics["val_acc"] > 0.4  # NOUN everywhere: 0.16


def test_lightning_plain_cli_trains_with_sgd(docs):
    sandbox, _ = docs("lightning.md")
    states = [
        torch.load(path, weights_only=True)
        for path in sandbox.glob("lightning_logs/version_*/checkpoints/*.ckpt")
    ]
    (state,) = [s for s in states if "momentum" in s["optimizer_states"][0]["param_groups"][0]]
    (group,) = state["optimizer_states"][0]["param_groups"]
    # SGD's (it has momentum) at a constant 0.1: Lightning's --optimizer, no scheduler.
    assert group["lr"] == 0.1 and state["lr_schedulers"] == []
    assert state["hyper_parameters"]["char_features"] == "cnn"


def test_lightning_lr_find_sets_the_rate_that_fit_then_uses(docs):
    namespace = _lightning(docs, "Finding a learning rate").namespace
    suggestion = namespace["finder"].suggestion()
    assert suggestion is not None and namespace["model"].hparams.lr == suggestion
    optimizer = namespace["trainer"].optimizers[0]
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["initial_lr"] == suggestion


def test_lightning_checkpoint_tests_and_predicts_in_input_order(docs):
    namespace = _lightning(docs, "Testing and predicting with a checkpoint").namespace
    (scores,) = namespace["scores"]
    assert 0.5 < scores["test_acc"] <= 1
    sentences = namespace["sentences"]
    assert [s["index"] for s in sentences] == list(range(len(MY_TEXT)))
    assert [s["tokens"] for s in sentences] == [line.split() for line in MY_TEXT]
    tag_set = set(namespace["model"].vocabularies.tags)
    for sentence in sentences:
        assert len(sentence["tags"]) == len(sentence["confidences"]) == len(sentence["tokens"])
        assert set(sentence["tags"]) <= tag_set


def test_tag_takes_token_lists_or_strings_and_refuses_a_flat_list(docs):
    namespace = _lightning(docs, "Training with a DataModule").namespace
    tagger = namespace["model"]
    with pytest.raises(TypeError, match="one sentence's tokens"):
        tagger.tag(["The", "cat", "sat", "."])
    with pytest.raises(TypeError, match="one string"):
        tagger.tag("The cat sat .")


def test_serving_page_answers_refuses_and_stops(docs):
    pytest.importorskip("litserve")
    sandbox, ran = docs("serving.md")
    from seqtag import SequenceTagger

    (session,) = under(ran, "Trying it")[1:]  # after the client file
    health, predicted, *client = session.stdout.splitlines()
    assert health == "ok"
    answer = json.loads(predicted)
    model = SequenceTagger.load_from_checkpoint(sandbox / QUICKSTART).eval()
    (expected,) = model.tag([["The", "cat", "sat", "."]], spans=True)
    assert answer["sentences"][0]["tags"] == expected["tags"]
    assert client[0].startswith("[('The', 'DET'")
    assert client[1].startswith("400 sentences[0][1]: '', is empty")
    assert len(client[2].split()) == 6 and all("/" in pair for pair in client[2].split())
