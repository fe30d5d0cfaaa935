"""Input data that is not what it seems (issue 22, sections 4 and 5): UTF-16 read as UTF-8,
JSON Lines that cannot be written back as JSON, invisible tokens, a missing-tag marker that is
a real tag, a test file without a known tag. Each is refused in one line naming the file (and
the line where there is one) instead of giving wrong values or a traceback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import REPO, train_checkpoint

from seqtag import SequenceTagger, TaggingDataModule
from seqtag.cli.main import main
from seqtag.errors import ConfigError, CorpusFormatError

FIXTURES = REPO / "tests" / "fixtures"
TINY_CONLLU = FIXTURES / "tiny.conllu"
TINY_COLUMNS = FIXTURES / "tiny.conll2003.txt"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.logger=false"]


@pytest.fixture(autouse=True)
def cli_logs_to_this_tests_stderr():
    """The CLI's log handler keeps the ``sys.stderr`` of the first ``main`` call in the process;
    each test's capsys has its own, so each test starts without the handler."""
    logger = logging.getLogger("seqtag")
    saved = logger.handlers[:]
    logger.handlers.clear()
    yield
    logger.handlers[:] = saved


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny POS tagger trained for one epoch on the two-sentence fixture."""
    data = TaggingDataModule(train_path=str(TINY_CONLLU), batch_size=2)
    model = SequenceTagger(hidden_size=8)
    return train_checkpoint(tmp_path_factory.mktemp("untrusted-data"), data, model, seed=5)


@pytest.fixture(scope="module")
def tagger(checkpoint) -> SequenceTagger:
    return SequenceTagger.load_from_checkpoint(checkpoint, map_location="cpu")


def _refused(capsys, args: list[str], message: str) -> str:
    """Run ``seqtag ARGS``: exit status 1 and one ``seqtag: error:`` line holding ``message``."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("seqtag: error:")]
    assert len(errors) == 1 and message in errors[0], err
    return errors[0]


def _predict(checkpoint: Path, source: Path, fmt: str, output: Path) -> list[str]:
    return [
        "predict",
        f"--ckpt_path={checkpoint}",
        f"--data.predict_path={source}",
        f"--data.predict_format={fmt}",
        f"--prediction.output={output}",
        *QUIET,
    ]


# --- UTF-16 without a byte-order mark, and other NUL bytes -------------------------------------

TEXTS = {
    "text": "The cat sat .\nA dog ran .\n",
    "jsonl": '{"tokens": ["The", "cat"]}\n{"tokens": ["A", "dog"]}\n',
    "columns": "The DT\ncat NN\n\nA DT\n",
    "conllu": TINY_CONLLU.read_text(encoding="utf-8"),
}


@pytest.mark.parametrize("fmt", list(TEXTS))
@pytest.mark.parametrize(("encoding", "order"), [("utf-16-le", "LE"), ("utf-16-be", "BE")])
def test_utf16_without_a_bom_is_refused_not_tagged(
    checkpoint, tmp_path, capsys, fmt, encoding, order
):
    source = tmp_path / f"in.{fmt}"
    source.write_bytes(TEXTS[fmt].encode(encoding))  # no BOM: every other byte is NUL
    output = tmp_path / "out.txt"
    column = 2 if order == "LE" else 1
    _refused(
        capsys,
        _predict(checkpoint, source, fmt, output),
        f"{source}:1: NUL byte at column {column}: the file must be UTF-8 text, this looks "
        f"like UTF-16 (convert it: iconv -f UTF-16{order} -t UTF-8)",
    )
    assert not output.exists()


def test_a_training_file_with_a_nul_byte_names_the_line(tmp_path):
    lines = TINY_CONLLU.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[5] = lines[5].replace("do\t", "d\x00o\t", 1)
    corpus = tmp_path / "train.conllu"
    corpus.write_text("".join(lines), encoding="utf-8")
    data = TaggingDataModule(train_path=str(corpus))
    with pytest.raises(CorpusFormatError, match=r"train.conllu:6: NUL byte at column 4: .*binary"):
        data.sentences("train")


# --- invisible tokens: files, tag() and tag_stream() alike --------------------------------------


@pytest.mark.parametrize(
    ("fmt", "text", "message"),
    [
        ("text", "The cat .\nThe \u00a0 cat\n", "2: token 2, '\\xa0', is only whitespace (U+00A0)"),
        ("jsonl", '{"tokens": ["a"]}\n{"tokens": ["a", " "]}\n', "2: token 2, ' ', is only"),
        ("jsonl", '{"tokens": ["a\\u0000b"]}\n', "1: token 1, 'a\\x00b', holds a NUL character"),
        ("columns", "The DT\n\u3000 NN\n", "2: column 1, '\\u3000', is only whitespace (U+3000)"),
    ],
)
def test_an_invisible_token_in_a_file_is_refused(checkpoint, tmp_path, capsys, fmt, text, message):
    source = tmp_path / "in.txt"
    source.write_text(text, encoding="utf-8")
    _refused(capsys, _predict(checkpoint, source, fmt, tmp_path / "out"), f"{source}:{message}")


def test_a_conllu_form_of_only_whitespace_is_refused(tmp_path):
    text = TINY_CONLLU.read_text(encoding="utf-8").replace("\tcoffee\t", "\t\u00a0\t", 1)
    corpus = tmp_path / "train.conllu"
    corpus.write_text(text, encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"train.conllu:15: FORM column is only whitesp"):
        TaggingDataModule(train_path=str(corpus)).sentences("train")


@pytest.mark.parametrize(
    ("sentences", "message"),
    [
        ([["", "cat", ""]], "sentence 0, token 1, '', is empty"),
        ([["The", "cat"], ["The", " ", "cat"]], "sentence 1, token 2, ' ', is only whitespace"),
        ([["\u00a0"]], "sentence 0, token 1, '\\xa0', is only whitespace (U+00A0)"),
        ([["\t\n"]], "sentence 0, token 1, '\\t\\n', is only whitespace"),
        ([["a\x00b"]], "sentence 0, token 1, 'a\\x00b', holds a NUL character"),
        ([["a\u2028b"]], "holds a line break (U+2028 LINE SEPARATOR)"),
        (["fine words", "a\x00b c"], "sentence 1, token 1, 'a\\x00b', holds a NUL"),
    ],
)
def test_tag_and_tag_stream_refuse_invisible_tokens_alike(tagger, sentences, message):
    with pytest.raises(ValueError, match="tag\\(\\): ") as from_tag:
        tagger.tag(sentences)
    assert message in str(from_tag.value)
    for chunk_size in (1, 2, 1024):
        with pytest.raises(ValueError) as from_stream:
            list(tagger.tag_stream(iter(sentences), chunk_size=chunk_size))
        assert str(from_stream.value) == str(from_tag.value)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 1024])
def test_tag_stream_refuses_a_flat_token_list_whatever_the_chunk_size(tagger, chunk_size):
    with pytest.raises(TypeError, match="one sentence's tokens") as from_tag:
        tagger.tag(["The", "cat", "sat"])
    with pytest.raises(TypeError) as from_stream:
        list(tagger.tag_stream(["The", "cat", "sat"], chunk_size=chunk_size))
    assert str(from_stream.value) == str(from_tag.value)
    with pytest.raises(TypeError, match="one sentence's tokens"):
        list(tagger.tag_stream(iter(["The", "cat", "sat"]), chunk_size=chunk_size))


@pytest.mark.parametrize("chunk_size", [1, 2, 1024])
def test_tag_stream_takes_one_word_sentence_strings_as_tag_does(tagger, chunk_size):
    sentences = ["Hello", "Thanks", "Good morning", "Bye"]
    expected = tagger.tag(sentences)
    assert [len(result) for result in expected] == [1, 1, 2, 1]
    assert list(tagger.tag_stream(iter(sentences), chunk_size=chunk_size)) == expected
    assert list(tagger.tag_stream(["Hello"], chunk_size=chunk_size)) == tagger.tag(["Hello"])


# --- JSON Lines that the output could not write back -------------------------------------------


def _jsonl(tmp_path: Path, second_line: str) -> Path:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "tokens": ["The", "cat"]}\n' + second_line + "\n", "utf-8")
    return source


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"])
def test_a_non_finite_number_is_refused_with_file_and_line(checkpoint, tmp_path, capsys, number):
    source = _jsonl(tmp_path, '{"id": 2, "score": ' + number + ', "tokens": ["A", "dog"]}')
    output = tmp_path / "out.jsonl"
    _refused(
        capsys,
        _predict(checkpoint, source, "jsonl", output),
        f"{source}:2: {number} is not a finite number: JSON has no NaN or infinity",
    )
    assert not output.exists()


def test_finite_numbers_pass_through_as_json(checkpoint, tmp_path):
    source = _jsonl(tmp_path, '{"id": 2, "score": 1e300, "small": -0.5, "tokens": ["A", "dog"]}')
    output = tmp_path / "out.jsonl"
    main(_predict(checkpoint, source, "jsonl", output))
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert records[1]["score"] == 1e300 and records[1]["small"] == -0.5
    assert records[1]["tokens"] == ["A", "dog"] and len(records[1]["tags"]) == 2


@pytest.mark.parametrize("field", ["tags", "confidences", "spans", "uncertainty"])
def test_a_record_holding_a_field_seqtag_writes_is_refused_naming_it(
    checkpoint, tmp_path, capsys, field
):
    source = _jsonl(tmp_path, json.dumps({"tokens": ["A", "dog"], field: [0.5, 0.25]}))
    output = tmp_path / "out.jsonl"
    args = [*_predict(checkpoint, source, "jsonl", output), "--prediction.confidences=false"]
    _refused(capsys, args, f'{source}:2: the record already has "{field}", a field seqtag writes')
    assert not output.exists()


@pytest.mark.parametrize(
    "line",
    [
        "[" * 100_000,
        '{"tokens": ["a"], "deep": ' + "[" * 5_000 + "]" * 5_000 + "}",
        '{"tokens": ["a"], "deep": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + "}",
    ],
    ids=["100000 open brackets", "5000 nested lists", "5000 nested objects"],
)
def test_deeply_nested_json_is_one_line(checkpoint, tmp_path, capsys, line):
    source = _jsonl(tmp_path, line)
    output = tmp_path / "out.jsonl"
    _refused(
        capsys,
        _predict(checkpoint, source, "jsonl", output),
        f"{source}:2: JSON nested more than 100 levels deep",
    )


@pytest.mark.parametrize("where", ["token", "field", "key"])
def test_a_lone_surrogate_is_refused_before_tagging(checkpoint, tmp_path, capsys, where):
    record = {
        "token": '{"tokens": ["a\\ud800b"]}',
        "field": '{"note": "x\\udfffy", "tokens": ["a"]}',
        "key": '{"\\ud83dx": 1, "tokens": ["a"]}',
    }[where]
    source = _jsonl(tmp_path, record)
    output = tmp_path / "out.jsonl"
    _refused(
        capsys,
        _predict(checkpoint, source, "jsonl", output),
        f"{source}:2: a lone surrogate escape",
    )
    assert not output.exists()


def test_a_surrogate_pair_is_text_and_passes_through(checkpoint, tmp_path):
    source = _jsonl(tmp_path, '{"note": "\\ud83d\\ude00", "tokens": ["\\ud83d\\ude00", "!"]}')
    output = tmp_path / "out.jsonl"
    main(_predict(checkpoint, source, "jsonl", output))
    last = json.loads(output.read_text(encoding="utf-8").splitlines()[1])
    assert last["note"] == "\U0001f600" and last["tokens"] == ["\U0001f600", "!"]


# --- the missing-tag marker, and files without a known tag -------------------------------------


def test_a_marker_that_is_a_tag_of_the_span_scheme_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [
        "fit",
        f"--data.train_path={TINY_COLUMNS}",
        "--data.format=columns",
        "--data.tag_scheme=iob2",
        "--data.missing_tag=O",
        "--trainer.max_epochs=1",
        f"--checkpoint.dirpath={tmp_path / 'checkpoints'}",
        *QUIET,
    ]
    _refused(capsys, args, "data.missing_tag 'O' is a tag of the iob2 scheme, not a marker")
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("marker", ["B-ORG", "I-X"])
def test_a_chunk_tag_as_marker_is_refused(marker):
    data = TaggingDataModule(
        train_path=str(TINY_COLUMNS), format="columns", tag_scheme="bio", missing_tag=marker
    )
    with pytest.raises(ConfigError, match=f"data.missing_tag '{marker}' is a tag of the iob2"):
        data.sentences("train")


def test_a_upos_tag_as_marker_is_refused_and_underscore_is_not():
    data = TaggingDataModule(train_path=str(TINY_CONLLU), missing_tag="X")
    with pytest.raises(ConfigError, match="'X' is a universal POS tag"):
        data.sentences("train")
    assert len(TaggingDataModule(train_path=str(TINY_CONLLU)).sentences("train")) == 2


def test_seqtag_test_refuses_a_file_without_a_known_gold_tag(checkpoint, tmp_path, capsys):
    lines = []
    for line in TINY_CONLLU.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) == 10 and fields[0].isdigit():
            fields[3] = "_"
        lines.append("\t".join(fields))
    gold = tmp_path / "unannotated.conllu"
    gold.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["test", f"--ckpt_path={checkpoint}", f"--data.test_path={gold}", *QUIET]
    _refused(capsys, args, f"{gold}: no sentence has a known tag: every tag is the marker '_'")
    assert "test_acc" not in capsys.readouterr().out
