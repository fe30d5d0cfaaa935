"""Hostile text at the command line: odd line ends, line breaks inside tokens, a closed pipe, a
config that is not UTF-8. Each ends as the right output or one line on stderr, never a
traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, train_checkpoint

from seqtag import SequenceTagger, TaggingDataModule
from seqtag.cli.main import main
from seqtag.errors import ConfigError
from seqtag.prediction.writer import format_conll, format_jsonl

TINY_CONLLU = REPO / "tests" / "fixtures" / "tiny.conllu"
SENTENCES = [["The", "cat", "sat", "."], ["A", "dog", "ran", "home", "."], ["Hi", "!"]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny tagger trained for one epoch on the two-sentence fixture."""
    data = TaggingDataModule(train_path=str(TINY_CONLLU), batch_size=2)
    model = SequenceTagger(hidden_size=8)
    return train_checkpoint(tmp_path_factory.mktemp("hostile"), data, model, seed=3)


def _predict_args(checkpoint: Path, source: Path, fmt: str = "text") -> list[str]:
    return [
        "predict",
        f"--ckpt_path={checkpoint}",
        f"--data.predict_path={source}",
        f"--data.predict_format={fmt}",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
    ]


def _write_text(path: Path, line_end: str) -> Path:
    path.write_bytes(line_end.join(" ".join(s) for s in SENTENCES).encode() + line_end.encode())
    return path


def test_cr_only_line_ends_tag_like_lf(checkpoint, tmp_path):
    """Old-Mac files: one sentence per CR-ended line, not one sentence of '.\\rA' tokens."""
    outputs = {}
    for name, line_end in (("lf", "\n"), ("cr", "\r"), ("crlf", "\r\n")):
        source = _write_text(tmp_path / f"{name}.txt", line_end)
        output = tmp_path / f"{name}.conll"
        main([*_predict_args(checkpoint, source), f"--prediction.output={output}"])
        outputs[name] = output.read_bytes()
    assert outputs["cr"] == outputs["lf"] == outputs["crlf"]
    blocks = outputs["lf"].decode().rstrip("\n").split("\n\n")
    assert [[row.split("\t")[0] for row in block.split("\n")] for block in blocks] == SENTENCES


@pytest.mark.parametrize(
    ("char", "name"),
    [
        ("\v", "U+000B LINE TABULATION"),
        ("\f", "U+000C FORM FEED"),
        ("\x85", "U+0085 NEXT LINE"),
        ("\u2028", "U+2028 LINE SEPARATOR"),
        ("\u2029", "U+2029 PARAGRAPH SEPARATOR"),
    ],
)
def test_line_break_inside_a_token_is_one_line_naming_file_and_line(
    checkpoint, tmp_path, capsys, char, name
):
    source = tmp_path / "in.txt"
    source.write_bytes(f"The cat sat .\rA do{char}g ran .\n".encode())
    output = tmp_path / "out.conll"
    with pytest.raises(SystemExit) as exit_info:
        main([*_predict_args(checkpoint, source), f"--prediction.output={output}"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"seqtag: error: {source}:2: {name} inside a token at column 5")
    assert not output.exists()


def test_jsonl_token_with_a_newline_is_refused(checkpoint, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    records = [{"tokens": ["fine"]}, {"id": 7, "tokens": ["a", "b\nc"]}]
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(_predict_args(checkpoint, source, "jsonl"))
    assert exit_info.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"seqtag: error: {source}:2: U+000A LINE FEED inside token 2, 'b\\nc'")


def test_jsonl_output_is_one_line_per_sentence_whatever_the_other_fields_hold():
    extra = {"note": "a\u2028b\u2029c\x85d\ne\rf\vg\fh\x1ci"}
    line = format_jsonl(["x"], ["NOUN"], None, extra)
    assert line.endswith("\n") and len(line.splitlines()) == 1
    assert json.loads(line) == {**extra, "tokens": ["x"], "tags": ["NOUN"]}
    assert format_jsonl(["é"], ["X"]) == '{"tokens": ["é"], "tags": ["X"]}\n'  # still UTF-8


@pytest.mark.parametrize("token", ["a\tb", "a\u2028b", "a\rb", "a\x1eb"])
def test_conll_output_refuses_a_token_it_cannot_write(token):
    with pytest.raises(ConfigError, match=r"cannot write the token .* as CoNLL: it holds"):
        format_conll(["ok", token], ["X", "Y"])
    assert format_conll(["ok", "a b"], ["X", "Y"]) == "ok\tX\na b\tY\n\n"


def test_output_closed_early_ends_quietly(checkpoint, tmp_path):
    """``seqtag predict | head -2``: no BrokenPipeError traceback, SIGPIPE's status 141."""
    source = tmp_path / "big.txt"
    # About 250 KB of output, written in chunks of 64 sentences: far more than a pipe holds.
    source.write_text("The cat sat on the mat .\n" * 5000, encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "seqtag",
        *_predict_args(checkpoint, source),
        "--data.predict_chunk_size=64",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    seqtag = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment
    )
    head = subprocess.run(["head", "-2"], stdin=seqtag.stdout, capture_output=True, check=True)
    seqtag.stdout.close()
    err = seqtag.stderr.read().decode()
    assert seqtag.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception" not in err
    assert head.stdout.decode().splitlines()[0].startswith("The\t")


@pytest.mark.parametrize("style", ["separate", "equals"])
def test_config_that_is_not_utf8_is_one_line(tmp_path, capsys, style):
    config = tmp_path / "bad.yaml"
    config.write_bytes(b"trainer:\n  max_epochs: 1\n# caf\xe9\n")
    option = ["--config", str(config)] if style == "separate" else [f"--config={config}"]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *option])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"seqtag: error: {config}:3: invalid UTF-8 (byte 0xe9 at column 6); "
        "the file must be UTF-8 encoded"
    )


def test_config_that_is_not_utf8_in_a_subprocess(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_bytes(b"\xff\xfet\x00r\x00")  # UTF-16
    result = subprocess.run(
        [sys.executable, "-m", "seqtag", "fit", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"seqtag: error: {config}:1: invalid UTF-8 (byte 0xff at column 1)")
    )
