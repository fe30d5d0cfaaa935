"""Encoding remembers tokens it has seen: the same ids as a lookup every time, bounded memory,
arrays nobody can change behind another sentence's back, and vocabularies that still pickle."""

import pickle

import numpy as np
import pytest

import seqtag.data.vocab as vocab_module
from seqtag.data.batching import collate, encode_sentence
from seqtag.data.vocab import Vocabularies, Vocabulary

WORDS = ["Paris", "the", "cat", "2024"]
TEXT = [
    ["The", "cat", "sat", "in", "Paris", "in", "2024", "."],
    ["PARIS", "cats", "The", "cat", "1999", "Zyxwvutsrqponmlkjihgfedcba", "!"],
]


def vocabularies(lowercase: bool = False) -> Vocabularies:
    return Vocabularies(
        words=Vocabulary(WORDS, fallback=True, unknown_shapes=True),
        tags=Vocabulary(["X"], pad=None, unk=None),
        chars=Vocabulary(sorted(set("".join(WORDS)))),
        lowercase=lowercase,
        max_word_length=6,
    )


def looked_up(vocab: Vocabularies, tokens: list[str]) -> list[int]:
    """What every token's id is without any memo: the vocabulary's own lookup."""
    return [vocab.words.index(t.lower() if vocab.lowercase else t) for t in tokens]


@pytest.mark.parametrize("lowercase", [False, True])
def test_remembered_ids_are_the_looked_up_ids_at_every_occurrence(lowercase):
    vocab = vocabularies(lowercase)
    for _ in range(3):  # first pass fills the memo, later passes read it
        for tokens in TEXT:
            assert vocab.encode_words(tokens) == looked_up(vocab, tokens)
    # Unknown words keep their shape's entry, known ones their own, through the memo.
    ids = vocab.encode_words(TEXT[1])
    assert ids[4] == vocab.words.index("1999") != vocab.words.unk_id  # the number shape


def test_character_ids_match_the_character_vocabulary_and_cannot_be_changed():
    vocab = vocabularies()
    long_word = "Zyxwvutsrqponmlkjihgfedcba"
    arrays = vocab.char_arrays(["cat", long_word, "cat"])
    assert arrays[0] is arrays[2]  # one array per token, shared by its occurrences
    assert arrays[0].tolist() == vocab.chars.encode("cat")
    assert arrays[1].tolist() == vocab.chars.encode("Zyxcba")  # first and last characters
    with pytest.raises(ValueError, match="read-only"):
        arrays[0][0] = 7
    # The list form stays plain Python ints, for callers that store them.
    assert vocab.encode_chars(["cat"]) == [vocab.chars.encode("cat")]
    assert all(type(i) is int for i in vocab.encode_chars(["cat"])[0])


def test_batches_are_built_from_shared_arrays_without_changing_them():
    vocab = vocabularies()
    sentences = [encode_sentence(vocab, i, tokens) for i, tokens in enumerate(TEXT)]
    before = vocab.char_arrays(["cat"])[0].copy()
    batch = collate(sentences)
    assert batch["chars"].shape[:2] == (2, 8)
    assert np.array_equal(vocab.char_arrays(["cat"])[0], before)
    assert batch["chars"][0, 1, :3].tolist() == before.tolist()


def test_memo_is_bounded_and_still_right_after_it_starts_over(monkeypatch):
    monkeypatch.setattr(vocab_module, "TOKEN_MEMO_SIZE", 5)
    vocab = vocabularies()
    tokens = [f"word{i}" for i in range(23)] + ["Paris", "cat"]
    assert vocab.encode_words(tokens) == looked_up(vocab, tokens)
    assert [a.tolist() for a in vocab.char_arrays(tokens)] == [
        vocab.chars.encode(t[:3] + t[-3:] if len(t) > 6 else t) for t in tokens
    ]
    memo = vocab._memo  # the test looks inside: the bound is what it checks
    assert len(memo.words) <= 5 and len(memo.chars) <= 5


def test_vocabularies_pickle_without_their_memo_and_encode_the_same_afterwards():
    vocab = vocabularies()
    vocab.encode_words(TEXT[0] * 100)
    vocab.char_arrays(TEXT[0])
    copy = pickle.loads(pickle.dumps(vocab))
    assert "_memo" not in copy.__dict__
    assert copy == vocab
    assert copy.encode_words(TEXT[1]) == vocab.encode_words(TEXT[1])
    assert len(pickle.dumps(vocab)) == len(pickle.dumps(vocabularies()))
