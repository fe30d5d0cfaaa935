"""Pretrained vectors: every format on tiny files made here, fallbacks, errors, alignment.

Covers :mod:`seqtag.data.vectors.files`, :mod:`seqtag.data.vectors.embeddings` and
:mod:`seqtag.data.vectors.alignment` through their public functions.
"""

from __future__ import annotations

import gzip
import logging
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from gensim.models import FastText, KeyedVectors
from gensim.models.fasttext import save_facebook_model

from seqtag.data.vectors.alignment import CoverageReport, align_vectors, pretrained_words_in
from seqtag.data.vectors.embeddings import PretrainedVectors, load_vectors
from seqtag.errors import VectorFormatError

SHARED = REPO / ".." / "shared" / "data"

# "apple"/"Apple": exact beats lowercase; "ab1"/"AB0": lowercase beats digits; "X0"/"x0":
# digits of the exact form beat digits of the lowercase form.
WORDS = ["the", "apple", "Apple", "0000", "ab1", "AB0", "X0", "x0", "dog"]
DIM = 4


def make_keyed_vectors(words: list[str] = WORDS, dim: int = DIM, seed: int = 0) -> KeyedVectors:
    kv = KeyedVectors(dim)
    kv.add_vectors(words, np.random.default_rng(seed).normal(size=(len(words), dim)))
    return kv


def write_glove(path: Path, kv: KeyedVectors) -> None:
    lines = [" ".join([word, *(repr(float(x)) for x in kv[word])]) for word in kv.index_to_key]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyedVectors, dict[str, Path]]:
    """The same tiny table in every static format, keyed by the format's name."""
    folder = tmp_path_factory.mktemp("vectors")
    kv = make_keyed_vectors()
    files = {
        "word2vec-bin": folder / "tiny.bin",
        "word2vec-text": folder / "tiny.txt",
        "fasttext-vec": folder / "tiny.vec",
        "glove": folder / "tiny.glove.txt",
    }
    kv.save_word2vec_format(str(files["word2vec-bin"]), binary=True)
    kv.save_word2vec_format(str(files["word2vec-text"]), binary=False)
    kv.save_word2vec_format(str(files["fasttext-vec"]), binary=False)
    write_glove(files["glove"], kv)
    return kv, files


@pytest.fixture(scope="module")
def fasttext_bin(tmp_path_factory: pytest.TempPathFactory) -> tuple[FastText, Path]:
    sentences = [
        ["the", "cat", "sat", "on", "the", "mat"],
        ["a", "dog", "ran", "in", "the", "park"],
        ["cats", "and", "dogs", "are", "pets"],
    ] * 10
    model = FastText(
        sentences, vector_size=8, min_count=3, bucket=2000, epochs=2, workers=1, seed=1
    )
    path = tmp_path_factory.mktemp("fasttext") / "tiny.ft.bin"
    save_facebook_model(model, str(path))
    return model, path


def table(words: list[str], dim: int = DIM) -> PretrainedVectors:
    matrix = np.arange(len(words) * dim, dtype=np.float32).reshape(len(words), dim)
    return PretrainedVectors("mem", list(words), matrix, {w: i for i, w in enumerate(words)}, None)


# -- formats -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["word2vec-bin", "word2vec-text", "fasttext-vec", "glove"])
@pytest.mark.parametrize("auto", [False, True])
def test_each_format_loads_words_and_values(tiny, fmt: str, auto: bool) -> None:
    kv, files = tiny
    vectors = load_vectors(files[fmt], "auto" if auto else fmt)
    assert vectors.words == WORDS
    assert vectors.index == {w: i for i, w in enumerate(WORDS)}
    assert vectors.dim == DIM
    assert vectors.matrix.dtype == np.float32
    np.testing.assert_array_equal(vectors.matrix, kv.vectors)
    assert vectors.oov_vector is None
    assert vectors.path == str(files[fmt])


@pytest.mark.parametrize(
    ("fmt", "detected"),
    [
        ("word2vec-bin", "word2vec-bin"),
        ("word2vec-text", "word2vec-text"),
        ("fasttext-vec", "word2vec-text"),  # a .vec file *is* word2vec text
        ("glove", "glove"),
    ],
)
def test_auto_detects_each_format(tiny, fmt: str, detected: str) -> None:
    assert load_vectors(tiny[1][fmt]).format == detected


def test_auto_detects_fasttext_bin(fasttext_bin) -> None:
    assert load_vectors(fasttext_bin[1]).format == "fasttext-bin"


def test_compressed_text_and_binary(tiny, tmp_path: Path) -> None:
    kv, files = tiny
    for fmt in ("glove", "word2vec-text", "word2vec-bin"):
        packed = tmp_path / (files[fmt].name + ".gz")
        packed.write_bytes(gzip.compress(files[fmt].read_bytes()))
        vectors = load_vectors(packed)
        assert vectors.format == fmt
        assert vectors.words == WORDS
        np.testing.assert_array_equal(vectors.matrix, kv.vectors)


def test_text_formats_and_alignment_need_no_gensim(tiny) -> None:
    """Only the gensim loaders import gensim; sniffing, text parsing and alignment do not."""
    code = (
        "import sys\n"
        "from seqtag.data.vectors.alignment import align_vectors\n"
        "from seqtag.data.vectors.embeddings import load_vectors\n"
        f"vectors = load_vectors({str(tiny[1]['glove'])!r}, cache=False)\n"
        "align_vectors(vectors, ['<pad>', '<unk>', 'The', 'cat'])\n"
        "print('gensim' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_fasttext_bin_in_vocabulary_and_subword_vectors(fasttext_bin) -> None:
    model, path = fasttext_bin
    vectors = load_vectors(path, "fasttext-bin")
    assert vectors.words == model.wv.index_to_key
    assert vectors.dim == 8
    np.testing.assert_allclose(vectors.lookup("the"), model.wv["the"], rtol=1e-5, atol=1e-6)
    assert "catz" not in vectors.index
    unseen = vectors.lookup("catz")
    assert unseen is not None
    assert unseen.shape == (8,)
    np.testing.assert_allclose(unseen, model.wv["catz"], rtol=1e-5, atol=1e-6)
    assert pretrained_words_in(vectors, ["catz", "the"]) == {"catz", "the"}
    matrix, report = align_vectors(vectors, ["<pad>", "<unk>", "the", "catz"])
    np.testing.assert_allclose(matrix[3], model.wv["catz"], rtol=1e-5, atol=1e-6)
    assert report.by_method["subword"] == 1
    assert report.by_method["exact"] == 1
    # The subword function survives pickling (DataLoader workers, multiprocessing).
    assert pickle.loads(pickle.dumps(vectors)).lookup("catz") is not None


# -- lookup fallbacks ---------------------------------------------------------------------------


def test_lookup_fallback_order(tiny) -> None:
    vectors = load_vectors(tiny[1]["word2vec-bin"])
    row = vectors.index.__getitem__

    def found(word: str) -> int | None:
        vector = vectors.lookup(word)
        if vector is None:
            return None
        return int(np.flatnonzero((vectors.matrix == vector).all(axis=1))[0])

    assert found("Apple") == row("Apple")  # exact beats lowercase
    assert found("APPLE") == row("apple")  # lowercase
    assert found("1984") == row("0000")  # digits normalised
    assert found("AB1") == row("ab1")  # lowercase beats digits ("AB0" exists too)
    assert found("X7") == row("X0")  # digits of the exact form beat digits of the lowercase
    assert found("x7") == row("x0")
    assert found("Dog") == row("dog")
    assert found("zebra") is None
    assert vectors.find("1984") == (row("0000"), "digits")


def test_lookup_without_exact_apple() -> None:
    vectors = table(["apple", "0000"])
    np.testing.assert_array_equal(vectors.lookup("Apple"), vectors.matrix[0])
    np.testing.assert_array_equal(vectors.lookup("1984"), vectors.matrix[1])
    assert vectors.lookup("pear") is None


def test_lookup_returns_read_only_view() -> None:
    vectors = table(["apple"])
    vector = vectors.lookup("apple")
    with pytest.raises(ValueError):
        vector[0] = 1.0
    vectors.matrix[0, 0] = 7.0  # the table itself stays writable
    assert vectors.matrix[0, 0] == 7.0


def test_pretrained_words_in_uses_the_fallback() -> None:
    vectors = table(["apple", "0000"])
    assert pretrained_words_in(vectors, ["Apple", "1999", "pear", "APPLE"]) == {
        "Apple",
        "1999",
        "APPLE",
    }


# -- alignment and coverage ---------------------------------------------------------------------


def test_align_vectors_and_coverage(caplog: pytest.LogCaptureFixture) -> None:
    vectors = table(["apple", "dog", "0000", "cat"], dim=8)
    vocabulary = ["<pad>", "<unk>", "apple", "Dog", "1999", "zebra"]
    counts = {"apple": 5, "Dog": 3, "1999": 2, "zebra": 10, "rare": 1}
    with caplog.at_level(logging.INFO, logger="seqtag.data.vectors.alignment"):
        matrix, report = align_vectors(vectors, vocabulary, word_counts=counts, seed=3)
    assert matrix.shape == (6, 8)
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[0], 0.0)  # padding
    assert np.any(matrix[1] != 0.0)  # unknown: random
    np.testing.assert_array_equal(matrix[2], vectors.matrix[0])
    np.testing.assert_array_equal(matrix[3], vectors.matrix[1])
    np.testing.assert_array_equal(matrix[4], vectors.matrix[2])
    assert np.any(matrix[5] != 0.0)
    assert report == CoverageReport(
        types_total=4,
        types_found=3,
        tokens_total=21,
        tokens_found=10,
        by_method={"exact": 1, "lower": 1, "digits": 1, "subword": 0},
    )
    assert str(report) == (
        "pretrained vectors cover 75.0% of 4 vocabulary types and 47.6% of 21 training tokens "
        "(exact 1, lowercase 1, digits 1)"
    )
    assert str(report) in caplog.text


def test_align_vectors_is_seeded_and_scaled() -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(500)]
    vectors = PretrainedVectors(
        "mem",
        words,
        (0.3 * rng.normal(size=(500, 50))).astype(np.float32),
        {w: i for i, w in enumerate(words)},
        None,
    )
    vocabulary = ["<pad>", "<unk>", "w1"] + [f"new{i}" for i in range(400)]
    first, report = align_vectors(vectors, vocabulary, seed=7)
    again, _ = align_vectors(vectors, vocabulary, seed=7)
    other, _ = align_vectors(vectors, vocabulary, seed=8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[3:], other[3:])
    np.testing.assert_array_equal(other[2], vectors.matrix[1])
    assert abs(float(first[3:].std()) - float(vectors.matrix.std())) < 0.02
    assert report.tokens_total is None
    assert str(report) == "pretrained vectors cover 0.2% of 401 vocabulary types (exact 1)"


def test_align_vectors_without_specials() -> None:
    vectors = table(["a", "b"])
    matrix, report = align_vectors(vectors, ["b", "a"], special=0)
    np.testing.assert_array_equal(matrix, vectors.matrix[[1, 0]])
    assert (report.types_total, report.types_found) == (2, 2)


def test_dimension_mismatch_names_file_and_both_dimensions(tiny) -> None:
    path = tiny[1]["word2vec-bin"]
    vectors = load_vectors(path)
    with pytest.raises(VectorFormatError) as caught:
        align_vectors(vectors, ["<pad>", "<unk>", "the"], expected_dim=50)
    message = str(caught.value)
    assert str(path) in message
    assert "dimension 4" in message
    assert "expects 50" in message
    matrix, _ = align_vectors(vectors, ["<pad>", "<unk>", "the"], expected_dim=DIM)
    assert matrix.shape == (3, DIM)


# -- errors ---------------------------------------------------------------------------------


def load_error(path: Path, fmt: str = "auto") -> VectorFormatError:
    with pytest.raises(VectorFormatError) as caught:
        load_vectors(path, fmt)  # type: ignore[arg-type]
    error = caught.value
    assert error.path == str(path)
    assert str(path) in str(error)
    return error


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in str(load_error(tmp_path / "nope.bin"))


def test_directory(tmp_path: Path) -> None:
    assert "directory" in str(load_error(tmp_path))


def test_unknown_format_name(tiny) -> None:
    assert "unknown vector format" in str(load_error(tiny[1]["glove"], "word2vec"))


@pytest.mark.parametrize("fmt", ["auto", "word2vec-bin", "word2vec-text", "glove", "fasttext-bin"])
def test_empty_file(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    assert "empty" in str(load_error(path, fmt))


@pytest.mark.parametrize("fmt", ["auto", "word2vec-bin", "word2vec-text", "glove", "fasttext-bin"])
def test_garbage_file(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "garbage.bin"
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 128, 5000, dtype=np.uint8)))
    load_error(path, fmt)


def test_prose_is_not_vectors(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not vectors\nat all\n")
    error = load_error(path)
    assert "not a recognised vector file" in str(error)
    assert error.line == 1


def test_wrong_count_of_numbers_on_a_line(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_text("3 4\na 1 2 3 4\nb 1 2 3\nc 1 2 3 4\n")
    error = load_error(path)
    assert error.line == 3
    assert f"{path}:3" in str(error)
    assert "expected 4 numbers" in str(error) and "found 3" in str(error)


def test_glove_with_inconsistent_dimension(tmp_path: Path) -> None:
    path = tmp_path / "bad.glove.txt"
    path.write_text("a 1 2 3\nb 1 2 3\nc 1 2 3 4\n")
    error = load_error(path, "glove")
    assert error.line == 3
    assert "expected 3 numbers" in str(error)


def test_glove_line_with_one_number_is_not_broadcast(tmp_path: Path) -> None:
    path = tmp_path / "one.glove.txt"
    path.write_text("a 1 2 3\nb 5\n")
    assert load_error(path).line == 2


def test_not_a_number(tmp_path: Path) -> None:
    path = tmp_path / "nan.txt"
    path.write_text("a 1 2 3\nb 1 x 3\n")
    error = load_error(path, "glove")
    assert error.line == 2
    assert "'x'" in str(error)


def test_word_without_vector(tmp_path: Path) -> None:
    path = tmp_path / "bare.txt"
    path.write_text("2 3\na 1 2 3\nb\n")
    assert load_error(path).line == 3


def test_non_finite_values(tmp_path: Path) -> None:
    path = tmp_path / "inf.txt"
    path.write_text("a 1 2 3\nb 1 inf 3\n")
    assert "'b'" in str(load_error(path))


def test_header_promises_more_vectors(tmp_path: Path) -> None:
    path = tmp_path / "truncated.txt"
    path.write_text("5 2\na 1 2\nb 3 4\n")
    assert "promises 5 vectors" in str(load_error(path, "word2vec-text"))


def test_truncated_binary(tiny, tmp_path: Path) -> None:
    path = tmp_path / "truncated.bin"
    path.write_bytes(tiny[1]["word2vec-bin"].read_bytes()[:-10])
    assert "promises" in str(load_error(path))


def test_truncated_fasttext_bin(fasttext_bin, tmp_path: Path) -> None:
    path = tmp_path / "truncated.ft.bin"
    path.write_bytes(fasttext_bin[1].read_bytes()[:300])
    assert "fastText" in str(load_error(path))


def test_binary_header_promises_fewer_vectors(tiny, tmp_path: Path) -> None:
    path = tmp_path / "short-header.bin"
    data = tiny[1]["word2vec-bin"].read_bytes()
    path.write_bytes(data.replace(f"{len(WORDS)} {DIM}\n".encode(), f"2 {DIM}\n".encode(), 1))
    message = str(load_error(path))
    assert "promises 2 vectors" in message and f"holds {len(WORDS)}" in message


@pytest.mark.parametrize("tail", [b"junk", b"\x00" * (4 * DIM + 3), b"extra " + b"\x00" * 4 * DIM])
def test_binary_bytes_after_the_promised_vectors(tiny, tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "appended.bin"
    path.write_bytes(tiny[1]["word2vec-bin"].read_bytes() + tail)
    assert f"promises {len(WORDS)} vectors" in str(load_error(path))


def test_binary_with_a_newline_after_each_vector(tmp_path: Path) -> None:
    """The layout of the original word2vec tool: newlines between entries are not extra bytes."""
    kv = make_keyed_vectors()
    entries = [f"{w} ".encode() + kv[w].astype(np.float32).tobytes() + b"\n" for w in WORDS]
    path = tmp_path / "c-tool.bin"
    path.write_bytes(f"{len(WORDS)} {DIM}\n".encode() + b"".join(entries))
    vectors = load_vectors(path, cache=False)
    assert vectors.words == WORDS
    np.testing.assert_array_equal(vectors.matrix, kv.vectors)


@pytest.mark.parametrize(
    ("fmt", "explicit"),
    [("glove", False), ("glove", True), ("word2vec-text", False), ("word2vec-text", True)],
)
def test_byte_order_mark_is_not_part_of_the_first_word(
    tiny, tmp_path: Path, fmt: str, explicit: bool
) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + tiny[1][fmt].read_bytes())
    vectors = load_vectors(path, fmt if explicit else "auto", cache=False)  # type: ignore[arg-type]
    assert vectors.format == fmt and vectors.words == WORDS
    np.testing.assert_allclose(vectors.matrix, tiny[0].vectors, rtol=1e-6)


def test_byte_order_mark_before_a_bad_line_keeps_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bom-bad.txt"
    path.write_bytes(b"\xef\xbb\xbfa 1 2 3\nb 1 2\n")
    assert load_error(path).line == 2


def test_binary_header_too_large_for_the_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.bin"
    path.write_bytes(b"900000000 300\nthe \x00\x00\x80\x3f")
    assert "900,000,000" in str(load_error(path))


def test_wrong_explicit_format_is_named(tiny) -> None:
    files = tiny[1]
    assert "format='word2vec-text'" in str(load_error(files["word2vec-text"], "glove"))
    assert "format='glove'" in str(load_error(files["glove"], "word2vec-text"))
    assert "format='word2vec-bin'" in str(load_error(files["word2vec-bin"], "word2vec-text"))
    assert "format='word2vec-text'" in str(load_error(files["word2vec-text"], "word2vec-bin"))


def test_bad_gzip(tmp_path: Path) -> None:
    path = tmp_path / "vectors.txt.gz"
    path.write_bytes(b"this is not gzip data at all")
    assert "cannot read" in str(load_error(path))


def test_repeated_words_keep_the_first_vector(tmp_path: Path) -> None:
    path = tmp_path / "dup.txt"
    path.write_text("a 1 2\nb 3 4\na 5 6\n")
    vectors = load_vectors(path)
    assert vectors.words == ["a", "b"]
    np.testing.assert_array_equal(vectors.lookup("a"), [1, 2])


# -- gensim's native (pickle) format -------------------------------------------------------------


def test_gensim_native_refused_by_default(tmp_path: Path) -> None:
    path = tmp_path / "tiny.kv"
    make_keyed_vectors().save(str(path))
    message = str(load_error(path))
    assert "pickle" in message
    assert "allow_gensim_native" in message
    vectors = load_vectors(path, allow_gensim_native=True)
    assert vectors.words == WORDS
    np.testing.assert_array_equal(vectors.matrix, make_keyed_vectors().vectors)
    # An explicit text or binary format does not get around the refusal.
    assert "pickle" in str(load_error(path, "word2vec-bin"))


def test_gensim_native_fasttext_model_keeps_subwords(fasttext_bin, tmp_path: Path) -> None:
    path = tmp_path / "tiny.model"
    fasttext_bin[0].save(str(path))
    vectors = load_vectors(path, allow_gensim_native=True)
    assert vectors.lookup("catz") is not None


# -- the shared 100-d vectors -------------------------------------------------------------------


@pytest.mark.skipif(not (SHARED / "embeddings").is_dir(), reason="../shared/data is absent")
def test_shared_binary_and_glove_agree() -> None:
    binary = load_vectors(SHARED / "embeddings" / "w2v-en-100d.bin")
    glove = load_vectors(SHARED / "embeddings" / "w2v-en-100d.glove.txt")
    assert (binary.format, glove.format) == ("word2vec-bin", "glove")
    assert binary.matrix.shape == glove.matrix.shape == (49_378, 100)
    assert binary.words == glove.words
    # The GloVe copy is the same table written with 5 decimals.
    np.testing.assert_allclose(binary.matrix, glove.matrix, rtol=0, atol=5.1e-6)
    np.testing.assert_array_equal(binary.lookup("The"), binary.matrix[binary.index["The"]])


DEFAULT_VECTORS = REPO / "data" / "vectors" / "w2v-en-100d-ewt.bin"


@pytest.mark.skipif(not DEFAULT_VECTORS.is_file(), reason="data/ has no compact vectors")
def test_default_compact_vectors() -> None:
    assert DEFAULT_VECTORS.stat().st_size <= 8_000_000
    compact = load_vectors(DEFAULT_VECTORS)
    assert compact.format == "word2vec-bin"
    assert compact.dim == 100
    if (SHARED / "embeddings").is_dir():
        full = load_vectors(SHARED / "embeddings" / "w2v-en-100d.bin")
        rows = [full.index[word] for word in compact.words]
        assert rows == sorted(rows)  # a subset, in the full table's order
        np.testing.assert_array_equal(compact.matrix, full.matrix[rows])
