"""Tests for seqtag.data.io.formats: corpus syntax, error locations, and the shared corpora."""

from __future__ import annotations

import gzip
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REPO, head_sentences
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqtag.data.io.formats import (
    Sentence,
    iter_corpus,
    iter_jsonl,
    read_columns,
    read_conllu,
    read_corpus,
    read_plain,
)
from seqtag.data.io.text_files import open_text
from seqtag.errors import CorpusFormatError

FIXTURES = REPO / "tests" / "fixtures"
TINY_CONLLU = FIXTURES / "tiny.conllu"
TINY_CONLL2003 = FIXTURES / "tiny.conll2003.txt"
SHARED = REPO / ".." / "shared" / "data"

WORD = "1\tcats\tcat\tNOUN\tNNS\t_\t0\troot\t0:root\t_"  # one valid CoNLL-U word line


def write(path: Path, text: str) -> Path:
    """Write text as UTF-8 bytes exactly (no newline translation)."""
    path.write_bytes(text.encode("utf-8"))
    return path


def conllu_line(word_id: str, form: str, upos: str = "NOUN", xpos: str = "NN") -> str:
    return "\t".join([word_id, form, form.lower(), upos, xpos, "_", "0", "root", "_", "_"])


def assert_error_at(call: Callable[[], object], path: Path, line: int | None, match: str) -> None:
    """The call raises CorpusFormatError that names the file, the line, and the problem."""
    with pytest.raises(CorpusFormatError, match=match) as info:
        call()
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert str(info.value).startswith(where), str(info.value)
    assert info.value.line == line
    assert info.value.path == str(path)


# --- open_text --------------------------------------------------------------------------------


def test_open_text_strips_line_ends_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo \n\nthree\x0cfour")
    assert list(open_text(path)) == [(1, "one"), (2, "two "), (3, ""), (4, "three\x0cfour")]


def test_open_text_ends_lines_at_lf_crlf_and_lone_cr_only(tmp_path: Path) -> None:
    """``\\r`` alone ends a line (old Mac files), ``\\r\\r\\n`` is one line end (a CRLF file
    written in text mode on Windows); ``\\v``, ``\\f``, U+0085, U+2028 and U+2029 stay inside
    the line."""
    text = "a\rb\r\nc\nd\r\r\n\r\n\re\x0bf\x0cg\x85h\u2028i\u2029j\r"
    path = write(tmp_path / "a.txt", text)
    expected = [
        (1, "a"),
        (2, "b"),
        (3, "c"),
        (4, "d"),
        (5, ""),
        (6, ""),
        (7, "e\vf\fg\x85h\u2028i\u2029j"),
    ]
    assert list(open_text(path)) == expected
    gzipped = tmp_path / "a.txt.gz"
    with gzip.open(gzipped, "wb") as stream:
        stream.write(path.read_bytes())
    assert list(open_text(gzipped)) == expected


def test_conllu_with_cr_cr_lf_line_ends_keeps_its_sentences(tmp_path: Path) -> None:
    text = (WORD + "\n" + conllu_line("2", "sat") + "\n\n" + WORD + "\n").replace("\n", "\r\r\n")
    assert [s.tokens for s in read_conllu(write(tmp_path / "x.conllu", text))] == [
        ("cats", "sat"),
        ("cats",),
    ]


def test_open_text_counts_cr_only_lines_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "mac.txt"
    path.write_bytes("ok\rfine\rnaïve\r".encode("latin-1"))
    assert_error_at(lambda: list(open_text(path)), path, 3, r"byte 0xef at column 3")


def test_open_text_cr_line_ends_on_standard_input(monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbfa b\rc\r")))
    assert list(open_text("-")) == [(1, "a b"), (2, "c")]


def test_open_text_reads_gzip(tmp_path: Path) -> None:
    path = tmp_path / "a.txt.gz"
    with gzip.open(path, "wb") as stream:
        stream.write("é\nb\n".encode())
    assert list(open_text(path)) == [(1, "é"), (2, "b")]


def test_open_text_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.conllu"
    assert_error_at(lambda: list(open_text(path)), path, None, "no such file")


def test_open_text_directory(tmp_path: Path) -> None:
    assert_error_at(lambda: list(open_text(tmp_path)), tmp_path, None, "is a directory")


def test_open_text_invalid_utf8_names_line_column_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("ok\nnaïve\n".encode("latin-1"))
    assert_error_at(
        lambda: list(open_text(path)),
        path,
        2,
        r"invalid UTF-8 \(byte 0xef at column 3\); the file must be UTF-8 encoded",
    )


def test_open_text_corrupt_gzip(tmp_path: Path) -> None:
    path = write(tmp_path / "plain.txt.gz", "not gzip\n")
    assert_error_at(lambda: list(open_text(path)), path, None, "gzip")


# --- CoNLL-U ----------------------------------------------------------------------------------


def test_conllu_skips_comments_multiword_tokens_and_empty_nodes() -> None:
    sentences = read_conllu(TINY_CONLLU)
    assert sentences == [
        Sentence(("I", "do", "n't", "know", "."), ("PRON", "AUX", "PART", "VERB", "PUNCT"), 4),
        Sentence(
            ("Sue", "likes", "coffee", "and", "Bill", "tea"),
            ("PROPN", "VERB", "NOUN", "CCONJ", "PROPN", "NOUN"),
            13,
        ),
    ]


def test_conllu_xpos() -> None:
    sentences = read_conllu(TINY_CONLLU, tag_field="xpos")
    assert [s.tags for s in sentences] == [
        ("PRP", "VBP", "RB", "VB", "."),
        ("NNP", "VBZ", "NN", "CC", "NNP", "NN"),
    ]


def test_conllu_crlf_trailing_space_blank_runs_and_no_final_blank(tmp_path: Path) -> None:
    text = "\r\n".join(
        [
            "",
            "# c",
            conllu_line("1", "a") + " \t",
            "",
            "  ",
            "",
            conllu_line("1", "b"),
            conllu_line("2", "c", "VERB"),
        ]
    )
    path = write(tmp_path / "x.conllu", text)
    assert read_conllu(path) == [
        Sentence(("a",), ("NOUN",), 3),
        Sentence(("b", "c"), ("NOUN", "VERB"), 7),
    ]


def test_conllu_keeps_spaces_inside_form(tmp_path: Path) -> None:
    path = write(tmp_path / "x.conllu", conllu_line("1", "50 000", "NUM") + "\n")
    assert read_conllu(path)[0].tokens == ("50 000",)


def test_conllu_without_required_tags(tmp_path: Path) -> None:
    lines = [conllu_line("1", "a", "_"), conllu_line("2", "b"), "", conllu_line("1", "c"), ""]
    path = write(tmp_path / "x.conllu", "\n".join(lines))
    assert read_conllu(path, require_tags=False) == [
        Sentence(("a", "b"), None, 1),
        Sentence(("c",), ("NOUN",), 4),
    ]


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ("1\tcats\tcat\tNOUN", r"expected 10 tab-separated fields \(CoNLL-U\), found 4"),
        (WORD + "\textra", r"expected 10 tab-separated fields \(CoNLL-U\), found 11"),
        ("1 cats cat NOUN NNS _ 0 root _ _", r"found 1 \(fields must be separated by tabs\)"),
        (conllu_line("x", "cats"), r"ID 'x' is not a number, a range like 1-2 or a decimal"),
        (conllu_line("1-", "cats"), r"ID '1-' is not a number"),
        (conllu_line("²", "cats"), r"ID '²' is not a number"),
        (conllu_line("1", ""), r"FORM column is empty"),
        (conllu_line("1", "cats", "_"), r"UPOS column is '_': every token needs a tag"),
        (conllu_line("1", "cats", ""), r"UPOS column is empty: every token needs a tag"),
    ],
)
def test_conllu_errors_name_file_and_line(tmp_path: Path, bad_line: str, match: str) -> None:
    path = write(tmp_path / "bad.conllu", f"# sent_id = 1\n{WORD}\n\n{WORD}\n{bad_line}\n")
    assert_error_at(lambda: read_conllu(path), path, 5, match)


def test_conllu_missing_xpos_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.conllu", conllu_line("1", "cats", "NOUN", "_") + "\n")
    read_conllu(path)  # UPOS is fine
    assert_error_at(lambda: read_conllu(path, tag_field="xpos"), path, 1, r"XPOS column is '_'")


def test_conllu_rejects_unknown_tag_field() -> None:
    with pytest.raises(ValueError, match="tag_field"):
        read_conllu(TINY_CONLLU, tag_field="lemma")  # type: ignore[arg-type]


# --- column files -----------------------------------------------------------------------------


def test_columns_conll2003_docstart_and_tag_column_choice() -> None:
    ner = read_columns(TINY_CONLL2003)
    assert ner == [
        Sentence(("EU", "rejects", "German", "call", "."), ("B-ORG", "O", "B-MISC", "O", "O"), 3),
        Sentence(("Peter", "Blackburn"), ("B-PER", "I-PER"), 9),
        Sentence(("BRUSSELS", "1996-08-22"), ("B-LOC", "O"), 14),
    ]
    assert read_columns(TINY_CONLL2003, tag_column=1)[0].tags == ("NNP", "VBZ", "JJ", "NN", ".")
    assert read_columns(TINY_CONLL2003, tag_column=-2)[1].tags == ("B-NP", "I-NP")
    pos_as_token = read_columns(TINY_CONLL2003, token_column=-3, tag_column=2)
    assert pos_as_token[2] == Sentence(("NNP", "CD"), ("B-NP", "I-NP"), 14)


def test_columns_docstart_without_blank_line_ends_sentence(tmp_path: Path) -> None:
    # Dutch CoNLL-2002 puts the first token right after -DOCSTART-.
    text = "-DOCSTART- -DOCSTART- O\nDe Art O\nzon N O\n-DOCSTART- -DOCSTART- O\nJan N B-PER\n"
    path = write(tmp_path / "ned.train", text)
    assert read_columns(path) == [
        Sentence(("De", "zon"), ("O", "O"), 2),
        Sentence(("Jan",), ("B-PER",), 5),
    ]


def test_columns_crlf_tabs_trailing_spaces_and_blank_runs(tmp_path: Path) -> None:
    text = "\r\n \r\nthe\tDT  B-NP \r\ncat  NN\tI-NP\t\r\n\r\n\t \r\n\r\nsat VBD B-VP"
    path = write(tmp_path / "chunks.txt", text)
    assert read_columns(path) == [
        Sentence(("the", "cat"), ("B-NP", "I-NP"), 3),
        Sentence(("sat",), ("B-VP",), 8),
    ]


def test_columns_keep_non_breaking_space_inside_tokens(tmp_path: Path) -> None:
    path = write(tmp_path / "x.txt", "10\xa0000 CD\n")
    assert read_columns(path)[0].tokens == ("10\xa0000",)


def test_columns_gzip_is_transparent(tmp_path: Path) -> None:
    path = tmp_path / "tiny.conll2003.txt.gz"
    with gzip.open(path, "wb") as stream:
        stream.write(TINY_CONLL2003.read_bytes())
    assert read_columns(path) == read_columns(TINY_CONLL2003)
    assert read_corpus(path, "columns") == read_columns(TINY_CONLL2003)


def test_columns_single_column_without_required_tags(tmp_path: Path) -> None:
    path = write(tmp_path / "tokens.txt", "a\nb\n\nc\n")
    assert read_columns(path, require_tags=False) == [
        Sentence(("a", "b"), None, 1),
        Sentence(("c",), None, 4),
    ]
    # An absent tag column is not an error when tags are optional, e.g. for prediction.
    assert read_columns(TINY_CONLL2003, tag_column=7, require_tags=False)[0].tags is None
    assert (
        read_columns(TINY_CONLL2003, require_tags=False)[0].tags
        == read_columns(TINY_CONLL2003)[0].tags
    )


def test_columns_count_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.txt", "\nthe DT B-NP\ncat NN I-NP\n\nsat VBD\n")
    assert_error_at(lambda: read_columns(path), path, 5, r"expected 3 columns like line 2, found 2")


def test_columns_tag_column_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path / "x.txt", "\n\nthe DT B-NP\n")
    assert_error_at(
        lambda: read_columns(path, tag_column=5),
        path,
        3,
        r"tag column 5 does not exist: the line has 3 columns",
    )
    assert_error_at(
        lambda: read_columns(path, tag_column=-4),
        path,
        3,
        r"tag column -4 does not exist: the line has 3 columns",
    )


def test_columns_token_column_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path / "x.txt", "the DT\n")
    assert_error_at(
        lambda: read_columns(path, token_column=2, require_tags=False),
        path,
        1,
        r"token column 2 does not exist: the line has 2 columns",
    )


def test_columns_single_column_needs_tags(tmp_path: Path) -> None:
    path = write(tmp_path / "tokens.txt", "-DOCSTART-\n\nthe\n")
    assert_error_at(
        lambda: read_columns(path),
        path,
        3,
        r"tag column -1 is the token column 0: the line has 1 column,",
    )


# --- plain text -------------------------------------------------------------------------------


def test_plain_one_sentence_per_line(tmp_path: Path) -> None:
    path = write(tmp_path / "x.txt", "\n The cat\tsat. \r\n\n  \nDogs bark\n")
    assert read_plain(path) == [
        Sentence(("The", "cat", "sat."), None, 2),
        Sentence(("Dogs", "bark"), None, 5),
    ]


# --- read_corpus ------------------------------------------------------------------------------


def test_read_corpus_dispatches() -> None:
    assert read_corpus(TINY_CONLLU, "conllu", tag_field="xpos") == read_conllu(
        TINY_CONLLU, tag_field="xpos"
    )
    assert read_corpus(TINY_CONLL2003, "columns", tag_column=1) == read_columns(
        TINY_CONLL2003, tag_column=1
    )
    assert read_corpus(TINY_CONLL2003, "text")[0].tokens == ("-DOCSTART-", "-X-", "-X-", "O")


@pytest.mark.parametrize("fmt", ["conllu", "columns", "text"])
@pytest.mark.parametrize("content", [b"", b"\n\n \t\r\n"])
def test_read_corpus_empty_file(tmp_path: Path, fmt: str, content: bytes) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    assert_error_at(
        lambda: read_corpus(path, fmt),
        path,
        None,
        r"file is empty, expected ",  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("fmt", "content"),
    [
        ("conllu", "# sent_id = 1\n# text = hi\n\n"),
        ("conllu", "1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n"),
        ("columns", "-DOCSTART- -X- -X- O\n\n-DOCSTART- -X- -X- O\n"),
    ],
)
def test_read_corpus_no_sentences(tmp_path: Path, fmt: str, content: str) -> None:
    path = write(tmp_path / "nothing.txt", content)
    assert_error_at(
        lambda: read_corpus(path, fmt),
        path,
        None,
        r"no sentences found: ",  # type: ignore[arg-type]
    )


def test_read_corpus_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="format must be"):
        read_corpus(TINY_CONLLU, "conll")  # type: ignore[arg-type]


def test_read_corpus_reports_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "train.conllu"
    assert_error_at(lambda: read_corpus(path, "conllu"), path, None, "no such file")


# --- lazy reading, JSON Lines, standard input --------------------------------------------------


def test_lazy_reader_reads_no_further_than_asked(tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    path.write_bytes(b"a b\nc\n\xff broken line\n")
    sentences = iter_corpus(path, "text", require_tags=False)
    assert [next(sentences).tokens, next(sentences).tokens] == [("a", "b"), ("c",)]
    with pytest.raises(CorpusFormatError, match=r"text\.txt:3: invalid UTF-8"):
        next(sentences)  # the bad line is only read when the caller gets that far


def test_jsonl_keeps_the_other_fields_and_allows_empty_sentences(tmp_path: Path) -> None:
    path = write(
        tmp_path / "in.jsonl",
        '{"id": 7, "tokens": ["Hello", "world"], "meta": {"a": [1]}}\n\n{"tokens": [], "id": 8}\n',
    )
    first, second = iter_jsonl(path)
    assert first == Sentence(("Hello", "world"), None, 1, {"id": 7, "meta": {"a": [1]}})
    assert second == Sentence((), None, 3, {"id": 8})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a", "b"]', '"tokens": a list of non-empty strings'),
        ('{"tokens": "a b"}', '"tokens": a list of non-empty strings'),
        ('{"tokens": ["a", 3]}', '"tokens": a list of non-empty strings'),
        ('{"tokens": ["a", ""]}', '"tokens": a list of non-empty strings'),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "in.jsonl", '{"tokens": ["ok"]}\n' + line + "\n")
    assert_error_at(lambda: list(iter_jsonl(path)), path, 2, message)


def test_jsonl_is_for_text_to_tag_only(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"tokens": ["ok"]}\n')
    with pytest.raises(ValueError, match="jsonl"):
        read_corpus(path, "jsonl")


def test_dash_reads_standard_input(monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"a b\n\nc\n")))
    assert [s.tokens for s in iter_corpus("-", "text", require_tags=False)] == [("a", "b"), ("c",)]


# --- line breaks inside tokens ---------------------------------------------------------------

LINE_BREAKS = [
    ("\v", "U+000B LINE TABULATION"),
    ("\f", "U+000C FORM FEED"),
    ("\x1c", "U+001C FILE SEPARATOR"),
    ("\x85", "U+0085 NEXT LINE"),
    ("\u2028", "U+2028 LINE SEPARATOR"),
    ("\u2029", "U+2029 PARAGRAPH SEPARATOR"),
]


@pytest.mark.parametrize(("char", "name"), LINE_BREAKS)
def test_text_refuses_a_line_break_inside_a_token(tmp_path: Path, char: str, name: str) -> None:
    path = write(tmp_path / "in.txt", f"one line\rtwo li{char}ne\r")
    message = re.escape(
        f"{name} inside a token at column 7 (tokens and tags cannot hold line breaks"
    )
    assert_error_at(lambda: read_plain(path), path, 2, message)


@pytest.mark.parametrize(("char", "name"), LINE_BREAKS)
def test_columns_refuse_a_line_break_inside_a_token_or_tag(
    tmp_path: Path, char: str, name: str
) -> None:
    path = write(tmp_path / "in.txt", f"the DT\n\ncat NN{char}\n")
    assert_error_at(
        lambda: read_columns(path), path, 3, re.escape(f"{name} inside a token or tag at column 7")
    )
    alone = write(tmp_path / "page.txt", f"the DT\n{char}\ncat NN\n")  # not a separator
    assert_error_at(
        lambda: read_columns(alone),
        alone,
        2,
        re.escape(f"{name} inside a token or tag at column 1"),
    )


@pytest.mark.parametrize(("char", "name"), LINE_BREAKS)
def test_conllu_refuses_a_line_break_in_form_or_tag(tmp_path: Path, char: str, name: str) -> None:
    form = write(tmp_path / "form.conllu", WORD + "\n" + conllu_line("2", f"do{char}g") + "\n")
    assert_error_at(
        lambda: read_conllu(form), form, 2, re.escape(f"{name} inside a token at column 5")
    )
    tag = write(tmp_path / "tag.conllu", conllu_line("1", "dog", upos=f"NO{char}UN") + "\n")
    assert_error_at(
        lambda: read_conllu(tag), tag, 1, re.escape(f"{name} inside the UPOS tag at column 13")
    )
    # elsewhere (lemma, misc, comments) it is no concern of a tagger
    other = f"# text = a{char}b\n" + WORD.replace("\tcat\t", f"\tc{char}at\t") + "\n"
    assert read_conllu(write(tmp_path / "ok.conllu", other))[0].tokens == ("cats",)


@pytest.mark.parametrize(
    ("char", "name"), [("\n", "U+000A LINE FEED"), ("\r", "U+000D CARRIAGE RETURN"), *LINE_BREAKS]
)
def test_jsonl_refuses_a_line_break_inside_a_token(tmp_path: Path, char: str, name: str) -> None:
    path = write(
        tmp_path / "in.jsonl", '{"tokens": ["a"]}\n' + json.dumps({"tokens": ["b", f"c{char}"]})
    )
    assert_error_at(
        lambda: list(iter_jsonl(path)),
        path,
        2,
        re.escape(f"{name} inside token 2, 'c\\"),
    )


# --- the shared corpora -----------------------------------------------------------------------


def shared_file(relative: str) -> Path:
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"shared corpus {path} is absent")
    return path


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("ud_en_ewt/en_ewt-ud-train.conllu", 12_544),
        ("ud_en_ewt/en_ewt-ud-dev.conllu", 2_001),
        ("ud_en_ewt/en_ewt-ud-test.conllu", 2_077),
    ],
)
def test_shared_ewt_sentence_counts(relative: str, expected: int) -> None:
    sentences = read_corpus(shared_file(relative), "conllu")
    assert len(sentences) == expected
    assert all(s.tags is not None and len(s.tags) == len(s.tokens) for s in sentences)
    xpos = read_corpus(shared_file(relative), "conllu", tag_field="xpos")
    assert [s.tokens for s in xpos] == [s.tokens for s in sentences]


@pytest.mark.parametrize(
    ("relative", "expected"), [("conll2000/train.txt", 8_936), ("conll2000/test.txt", 2_012)]
)
def test_shared_conll2000_sentence_counts(relative: str, expected: int) -> None:
    sentences = read_corpus(shared_file(relative), "columns")
    assert len(sentences) == expected
    tags = {tag for s in sentences for tag in s.tags or ()}
    assert "B-NP" in tags and "I-NP" in tags


def test_shared_conll2002() -> None:
    esp = read_corpus(shared_file("conll2002/esp.train"), "columns")
    assert len(esp) > 8000
    ned = read_corpus(shared_file("conll2002/ned.train"), "columns")
    assert all("-DOCSTART-" not in s.tokens for s in ned)
    assert {tag for s in ned for tag in s.tags or ()} >= {"O", "B-PER", "I-PER"}


# --- robustness: anything either parses or raises CorpusFormatError ---------------------------

TINY_LINES = (
    TINY_CONLLU.read_text("utf-8").splitlines() + TINY_CONLL2003.read_text("utf-8").splitlines()
)
SNIPPETS = ["", " ", "\t", "\r", "#", "-DOCSTART-", "1-2", "8.1", "_", "é", "\xa0", "\ufeff", "x"]


@st.composite
def mutated_corpus(draw: st.DrawFn) -> bytes:
    """A corpus assembled from real lines and odd snippets, with a few bytes overwritten."""
    lines = draw(st.lists(st.sampled_from(TINY_LINES + SNIPPETS), max_size=20))
    data = bytearray("\n".join(lines).encode("utf-8"))
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=300), mutated_corpus()))
def test_readers_raise_only_corpus_format_errors(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "corpus.txt"
    path.write_bytes(data)
    readers: list[Callable[[], list[Sentence]]] = [
        lambda: read_conllu(path),
        lambda: read_conllu(path, tag_field="xpos", require_tags=False),
        lambda: read_columns(path),
        lambda: read_columns(path, token_column=1, tag_column=0, require_tags=False),
        lambda: read_plain(path),
        lambda: read_corpus(path, "columns"),
    ]
    for read in readers:
        try:
            sentences = read()
        except CorpusFormatError as error:
            assert str(error).startswith(str(path))
            continue
        for sentence in sentences:
            assert sentence.tokens and all(sentence.tokens)
            assert sentence.tags is None or len(sentence.tags) == len(sentence.tokens)
            assert sentence.line >= 1


def test_head_sentences_slices_a_gzipped_corpus(tmp_path):
    """Corpus slices of tests and benchmarks (``benchmarks/corpus_slice.py``) read back."""
    source = tmp_path / "corpus.conllu.gz"
    with gzip.open(source, "wt", encoding="utf-8") as stream:
        stream.write(TINY_CONLLU.read_text(encoding="utf-8"))
    everything = read_conllu(TINY_CONLLU)
    first = read_conllu(head_sentences(source, tmp_path / "one.conllu", 1))
    assert [s.tokens for s in first] == [everything[0].tokens]
    more = read_conllu(head_sentences(source, tmp_path / "all.conllu", 10_000))
    assert [s.tokens for s in more] == [s.tokens for s in everything]
