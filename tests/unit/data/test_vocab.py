from collections import Counter

import pytest

from seqtag.data.vocab import (
    PAD,
    PAD_ID,
    SHAPES,
    UNK,
    Vocabularies,
    Vocabulary,
    lookup_forms,
    normalize_digits,
    shape_entry,
    word_shape,
)


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


def test_lookup_forms_order_and_deduplication():
    assert lookup_forms("Ab12") == [
        ("Ab12", "exact"),
        ("ab12", "lower"),
        ("Ab00", "digits"),
        ("ab00", "digits"),
    ]
    assert lookup_forms("the") == [("the", "exact")]
    assert lookup_forms("1984") == [("1984", "exact"), ("0000", "digits")]
    assert lookup_forms("AB") == [("AB", "exact"), ("ab", "lower")]


def test_fallback_lookup_follows_lookup_forms():
    """Whatever the vocabulary holds, the id is that of the first form of lookup_forms in it."""
    forms = ["Ab12", "ab12", "Ab00", "ab00"]
    for mask in range(1, 1 << len(forms)):
        held = [form for i, form in enumerate(forms) if mask >> i & 1]
        vocab = Vocabulary(held, fallback=True)
        first = next(form for form, _ in lookup_forms("Ab12") if form in held)
        assert vocab.decode([vocab.index("Ab12")]) == [first]


def test_padding_comes_first_with_id_pad_id():
    for vocab in (Vocabulary(["b", "a"]), Vocabulary(["x"], unknown_shapes=True)):
        assert vocab.pad_id == PAD_ID
        assert vocab.items[PAD_ID] == PAD
    assert Vocabulary(["NOUN"], pad=None, unk=None).pad_id is None


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


@pytest.mark.parametrize(
    ("word", "shape"),
    [
        ("GoogleOS", "mixed"),
        ("Morphed", "title"),
        ("NASA", "upper"),
        ("zebra", "lower"),
        ("1984", "number"),
        ("3.5", "number"),
        ("B52", "alphanumeric"),
        ("?!", "punctuation"),
        ("well-known", "lower-hyphen"),
        ("Jean-Luc", "mixed-hyphen"),
        ("Anglo-saxon", "title-hyphen"),
        ("U.S.-BASED", "upper-hyphen"),
        ("Été", "title"),
    ],
)
def test_word_shape_classes(word, shape):
    assert word_shape(word) == shape
    assert shape in SHAPES


def test_unknown_words_get_the_entry_of_their_shape():
    words = Vocabulary(["the", "cat", "0000"], fallback=True, unknown_shapes=True)
    assert words.items[: 2 + len(SHAPES)] == (PAD, UNK, *(shape_entry(s) for s in SHAPES))
    assert words.decode([words.index("Zebra")]) == ["<unk:title>"]
    assert words.decode([words.index("12345")]) == ["<unk:number>"]
    assert words.decode([words.index("GoogleOS")]) == ["<unk:mixed>"]
    # Known words and their fallbacks are untouched.
    assert words.index("The") == words.index("the")
    assert words.index("1984") == words.index("0000")
    assert words.unknown_id("Cat") == words.index(shape_entry("title"))


def test_shapes_survive_the_checkpoint_round_trip_and_old_vocabularies_have_none():
    words = Vocabulary(["cat"], fallback=True, unknown_shapes=True)
    restored = Vocabulary.from_dict(words.to_dict())
    assert restored == words and restored.index("Dog") == words.index("Dog")
    old = {"items": ["cat"], "pad": PAD, "unk": UNK, "fallback": True}  # before shapes
    legacy = Vocabulary.from_dict(old)
    assert not legacy.unknown_shapes and legacy.index("Dog") == legacy.unk_id


def test_shapes_need_an_unknown_entry():
    with pytest.raises(ValueError, match="unknown_shapes needs"):
        Vocabulary(["O"], pad=None, unk=None, unknown_shapes=True)
