from collections import Counter

import pytest

from seqtag.data.vocab import PAD, UNK, Vocabularies, Vocabulary, normalize_digits


def test_ids_are_sorted_and_rebuilding_gives_identical_ids():
    counts = Counter(["the", "cat", "sat", "on", "the", "mat", "the", "end"])
    first = Vocabulary.from_counts(counts)
    # A different insertion order (and so a different set/dict order) must not matter.
    second = Vocabulary.from_counts(dict(reversed(list(counts.items()))))
    assert first.items == second.items
    assert first.items[:2] == (PAD, UNK)
    assert list(first.items[2:]) == sorted(counts)
    assert first.pad_id == 0 and first.unk_id == 1


def test_min_freq_keeps_extra_words():
    counts = Counter({"frequent": 3, "rare": 1, "vectored": 1})
    vocab = Vocabulary.from_counts(counts, min_freq=2, extra={"vectored"})
    assert "frequent" in vocab and "vectored" in vocab
    assert "rare" not in vocab
    assert vocab.index("rare") == vocab.unk_id


def test_fallback_exact_then_lower_then_digits():
    vocab = Vocabulary(["Apple", "apple", "berry", "0000", "00.0"], fallback=True)
    assert vocab.decode([vocab.index("Apple")]) == ["Apple"]
    assert vocab.decode([vocab.index("APPLE")]) == ["apple"]
    assert vocab.decode([vocab.index("Berry")]) == ["berry"]
    assert vocab.decode([vocab.index("1984")]) == ["0000"]
    assert vocab.decode([vocab.index("12.5")]) == ["00.0"]
    assert vocab.index("unseen") == vocab.unk_id
    assert normalize_digits("A1b22") == "A0b00"


def test_without_fallback_lookup_is_exact():
    vocab = Vocabulary(["apple"])
    assert vocab.index("Apple") == vocab.unk_id


def test_tags_without_specials_raise_on_unknown():
    tags = Vocabulary(["NOUN", "VERB"], pad=None, unk=None)
    assert tags.encode(["VERB", "NOUN"]) == [1, 0]
    with pytest.raises(KeyError):
        tags.index("ADJ")


def test_plain_data_round_trip():
    vocabularies = Vocabularies(
        words=Vocabulary(["a", "b"], fallback=True),
        tags=Vocabulary(["B-X", "I-X", "O"], pad=None, unk=None),
        chars=Vocabulary(["a", "b"]),
        lowercase=True,
        tag_scheme="bioes",
        corpus_scheme="iob2",
        max_word_length=12,
    )
    data = vocabularies.to_dict()

    # Only plain Python data: what torch.load(weights_only=True) accepts.
    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, str | int | bool)

    assert plain(data)
    assert Vocabularies.from_dict(data) == vocabularies


def test_lowercase_encoding_and_long_word_chars():
    vocabularies = Vocabularies(
        words=Vocabulary(["hello"], fallback=True),
        tags=Vocabulary(["X"], pad=None, unk=None),
        chars=Vocabulary(sorted(set("abcdefghij"))),
        lowercase=True,
        max_word_length=4,
    )
    assert vocabularies.encode_words(["HELLO"]) == [2]
    # Long words keep their first and last characters.
    (chars,) = vocabularies.encode_chars(["abcdefghij"])
    assert vocabularies.chars.decode(chars) == list("abij")


def test_duplicate_entries_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        Vocabulary(["a", "a"], pad=None, unk=None)
