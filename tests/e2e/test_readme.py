"""README.md runs as written, top to bottom, in a sandbox laid out like a clone.

Every ```python and ```bash block runs in order (see ``doc_blocks``): the sandbox holds the
shipped data, so the one-minute demo runs exactly as the README gives it, and its output must
be the tagged sentence the README shows. Only these substitutions are made elsewhere:

- ``make install`` and ``make test`` run as ``make -n ...`` (they print what they would do;
  CI's ``make test`` runs them for real, and this test is part of it);
- "Training on your own data" reads ``train.conllu``, ``dev.conllu`` and ``test.conllu``, which
  the sandbox holds: 300/100/101-sentence slices of the EWT splits (the ``ewt_slice`` fixture),
  and its config trains one epoch, as every sandbox config but the demo's does;
- the Lightning snippet reads those slices instead of the whole EWT files, for one epoch
  instead of 15;
- "Serving over HTTP" starts its server on a port free at the time instead of 8000.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from conftest import REPO
from doc_blocks import (
    blocks,
    check_shown_blocks,
    free_port,
    make_sandbox,
    run_page,
    runnable,
    under,
)

README = REPO / "README.md"
DEMO = "A one-minute demo"
#: The sentences `printf` writes into my_text.txt in "Tagging text".
MY_TEXT = [
    ["The", "cat", "sat", "on", "the", "mat", "."],
    ["It", "rained", "in", "Boston", "yesterday", "."],
]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def readme(tmp_path_factory, ewt_slice) -> tuple:
    """The sandbox, and every block of the README as it ran there."""
    sandbox = make_sandbox(tmp_path_factory.mktemp("readme") / "seqtag")
    for split in ("train", "dev", "test"):
        shutil.copy(ewt_slice[split], sandbox / f"{split}.conllu")
    port = free_port()
    substitutions = {
        "make install": "make -n install",
        "make test": "make -n test",
        "data/ud_en_ewt/en_ewt-ud-train.conllu.gz": "train.conllu",
        "data/ud_en_ewt/en_ewt-ud-dev.conllu.gz": "dev.conllu",
        "max_epochs=15": "max_epochs=1",
        "--port 8000": f"--port {port}",  # "Serving over HTTP": a port free now
        "127.0.0.1:8000": f"127.0.0.1:{port}",
    }
    return sandbox, run_page(README, sandbox, substitutions)


def _shown(heading: str) -> str:
    (text,) = [b.code for b in blocks(README) if b.heading == heading and b.language == "text"]
    return text


def test_every_block_is_run_or_shown(readme):
    check_shown_blocks(README)
    _, ran = readme
    assert [item.block for item in ran] == runnable(README)


def test_the_readme_is_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200


def test_the_demo_runs_as_written_and_tags_the_sentence(readme):
    sandbox, ran = readme
    (demo,) = under(ran, DEMO)
    assert demo.code == demo.block.code  # no substitution: the commands a user types
    assert "configs/demo.yaml" in demo.code
    # The tagged sentence ends the output, after what seqtag fit prints as it trains.
    assert demo.stdout.rstrip("\n").endswith("\n" + _shown(DEMO).rstrip("\n"))
    assert (sandbox / "runs" / "demo" / "checkpoints" / "last.ckpt").is_file()


def _conll(text: str) -> list[list[list[str]]]:
    return [[line.split("\t") for line in part.splitlines()] for part in text.strip().split("\n\n")]


def test_tagging_from_the_command_line_writes_tags_and_confidences(readme):
    sandbox, _ = readme
    sentences = _conll((sandbox / "tagged.conll").read_text(encoding="utf-8"))
    assert [[row[0] for row in sentence] for sentence in sentences] == MY_TEXT
    for sentence in sentences:
        for _token, tag, confidence in sentence:
            assert tag.isupper() and 0 < float(confidence) <= 1
    assert sentences[0][0][1] == "DET" and sentences[0][-1][1] == "PUNCT"


def test_tagging_from_python_tags_a_string_and_a_stream(readme):
    _, ran = readme
    (_, python) = under(ran, "Tagging text")
    first, *streamed = python.stdout.splitlines()
    assert first.startswith("[[('DET', ") and first.count("(") == len(MY_TEXT[0])
    assert len(streamed) == len(MY_TEXT)
    tagger = python.namespace["tagger"]
    assert eval(streamed[1]) == tagger.tag([MY_TEXT[1]])[0]  # a list of (tag, confidence)


def test_serving_over_http_tags_the_sentence_and_stops(readme):
    _, ran = readme
    (serving,) = under(ran, "Serving over HTTP")
    health, answer = serving.stdout.splitlines()
    assert health == "ok"
    (sentence,) = json.loads(answer)["sentences"]
    assert sentence["tokens"] == ["The", "cat", "sat", "."]
    assert sentence["tags"][0] == "DET" and sentence["spans"] is None


def test_training_on_your_own_data_trains_and_tests_a_run_of_its_own(readme):
    sandbox, ran = readme
    (own,) = under(ran, "Training on your own data")
    run = sandbox / "runs" / "mine"
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {"best.ckpt", "last.ckpt"}
    assert list(run.glob("logs/version_*/metrics.csv"))
    assert "test_acc" in own.stdout
    state = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert state["hyper_parameters"]["char_features"] == "cnn"


def test_the_lightning_snippet_trains_and_tags(readme):
    _, ran = readme
    (snippet,) = under(ran, "In your own Lightning code")
    assert snippet.namespace["trainer"].current_epoch == 1
    tagged, _ = [line for line in snippet.stdout.splitlines() if line.startswith("[[(")]
    assert tagged.count("(") == 7  # 7 tokens in one sentence
    # The extended copy learnt the tag the first model never saw; that model is unchanged.
    last_token = snippet.namespace["tuned"].tag([["Loved", "it", ":-)"]])[0][-1]
    assert last_token[0] == "EMO"
    assert "EMO" not in snippet.namespace["model"].vocabularies.tags


def test_install_and_test_commands_are_the_makefiles(readme):
    _, ran = readme
    (install,) = under(ran, "Install")
    (development,) = under(ran, "Development")
    assert "make -n install" in install.code and "make -n test" in development.code
    assert "pytest" in development.stdout
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci.splitlines()[-1]


def test_every_config_the_readme_names_is_shipped():
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"`(?:configs/)?([\w/]+\.yaml)`", text)) - {"my_config.yaml"}
    assert named and all((REPO / "configs" / name).is_file() for name in named), named
