"""Tag schemes: conlleval chunk reading (against seqeval), conversions, CRF constraints."""

from __future__ import annotations

import itertools
import random
import warnings

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from seqtag.data.schemes import (
    SCHEMES,
    allowed_transitions,
    convert_tags,
    get_spans,
    normalize_scheme,
    split_tag,
    validate_tags,
)
from seqtag.errors import TagSchemeError

IOB_POOL = ["O", "B-X", "I-X", "B-Y", "I-Y", "B-Z-Q", "I-Z-Q"]
BIOES_POOL = ["O", "B-X", "I-X", "E-X", "S-X", "B-Y", "I-Y", "E-Y", "S-Y"]
POOLS = {"iob1": IOB_POOL, "iob2": IOB_POOL, "bioes": BIOES_POOL}


def random_tags(rng: random.Random, pool: list[str], max_len: int = 10) -> list[str]:
    """Any sequence over ``pool``, ill-formed ones included."""
    return [rng.choice(pool) for _ in range(rng.randint(0, max_len))]


def random_spans(rng: random.Random, length: int) -> list[tuple[str, int, int]]:
    """Sorted disjoint chunks, adjacent same-type chunks included (they test iob1's B-)."""
    spans, i = [], 0
    while i < length:
        if rng.random() < 0.3:
            i += 1
            continue
        end = min(length, i + rng.randint(1, 4))
        spans.append((rng.choice(["X", "Y", "Z-Q"]), i, end))
        i = end
    return spans


def emit(spans: list[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    """Independent writer of well-formed tags for ``spans`` (the oracle for conversions)."""
    tags = ["O"] * length
    for k, (type_, start, end) in enumerate(spans):
        after_same = k > 0 and spans[k - 1][2] == start and spans[k - 1][0] == type_
        for i in range(start, end):
            if scheme == "iob2":
                prefix = "B" if i == start else "I"
            elif scheme == "iob1":
                prefix = "B" if i == start and after_same else "I"
            elif end - start == 1:
                prefix = "S"
            else:
                prefix = "B" if i == start else "E" if i == end - 1 else "I"
            tags[i] = f"{prefix}-{type_}"
    return tags


def seqeval_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [(type_, start, end + 1) for type_, start, end in get_entities(list(tags))]


def bioes_as_iob2(tags: list[str]) -> list[str]:
    """The token-by-token reading of BIOES that conlleval users apply: S- as B-, E- as I-."""
    return [{"S": "B", "E": "I"}.get(t[0], t[0]) + t[1:] if t != "O" else t for t in tags]


# -- names and single tags ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("iob1", "iob1"),
        ("IOB2", "iob2"),
        ("bio", "iob2"),
        ("BIO", "iob2"),
        ("bioes", "bioes"),
        ("IOBES", "bioes"),
        (" iobes ", "bioes"),
    ],
)
def test_normalize_scheme(name, expected):
    assert normalize_scheme(name) == expected


def test_unknown_scheme_lists_valid_names():
    with pytest.raises(TagSchemeError, match=r"'bilou'.*iob1.*iob2.*bio.*bioes"):
        normalize_scheme("bilou")


def test_split_tag():
    assert split_tag("B-PER") == ("B", "PER")
    assert split_tag("I-PER-X") == ("I", "PER-X")
    assert split_tag("O") == ("O", None)
    assert split_tag("S-LOC", "bioes") == ("S", "LOC")


@pytest.mark.parametrize(
    ("tag", "scheme"),
    [
        ("X-PER", "iob2"),
        ("B-", "iob2"),
        ("PER", "iob2"),
        ("B", "iob2"),
        ("", "iob2"),
        ("b-PER", "iob2"),
        ("E-PER", "iob2"),
        ("S-PER", "iob1"),
        ("X-PER", "bioes"),
        ("<pad>", "bioes"),
    ],
)
def test_bad_tags_raise_naming_the_tag(tag, scheme):
    message = f"tag {tag!r} is not valid in the {scheme} scheme"
    with pytest.raises(TagSchemeError) as info:
        split_tag(tag, scheme)
    assert message in str(info.value)
    with pytest.raises(TagSchemeError, match="expected O or B-/I-"):
        validate_tags(["O", "B-PER", tag, "X-LATER"], scheme)
    with pytest.raises(TagSchemeError, match="is not valid"):
        get_spans(["O", tag], scheme)


def test_validate_tags_reports_the_first_bad_tag():
    with pytest.raises(TagSchemeError, match="'X-A'"):
        validate_tags(["B-PER", "X-A", "PER"], "iob2")
    validate_tags(["B-PER", "E-PER", "S-LOC", "O"], "bioes")


# -- conlleval chunk reading -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "scheme", "spans"),
    [
        ([], "iob2", []),
        (["O", "O"], "iob2", []),
        (
            ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC"],
            "iob2",
            [("PER", 0, 2), ("LOC", 3, 5), ("LOC", 5, 6)],
        ),
        (["I-PER"], "iob2", [("PER", 0, 1)]),  # I- at the start opens a chunk
        (["O", "I-PER", "I-PER"], "iob2", [("PER", 1, 3)]),  # so does I- after O
        (["I-PER", "I-LOC"], "iob2", [("PER", 0, 1), ("LOC", 1, 2)]),  # type change
        (["B-PER", "I-LOC", "I-LOC"], "iob2", [("PER", 0, 1), ("LOC", 1, 3)]),
        (["B-PER", "B-PER", "I-PER"], "iob2", [("PER", 0, 1), ("PER", 1, 3)]),
        (["B-PER", "I-PER", "I-PER"], "iob2", [("PER", 0, 3)]),
        (["B-PER-X", "I-PER-X"], "iob2", [("PER-X", 0, 2)]),  # hyphens inside types
        (["I-PER", "B-PER", "I-PER", "O"], "iob1", [("PER", 0, 1), ("PER", 1, 3)]),
        (["I-PER", "I-LOC", "B-LOC"], "iob1", [("PER", 0, 1), ("LOC", 1, 2), ("LOC", 2, 3)]),
        (["B-PER", "E-PER", "S-LOC"], "bioes", [("PER", 0, 2), ("LOC", 2, 3)]),
        (["S-PER", "S-PER"], "bioes", [("PER", 0, 1), ("PER", 1, 2)]),
        (["B-PER", "I-PER", "E-PER", "O", "S-X"], "bioes", [("PER", 0, 3), ("X", 4, 5)]),
        # Ill-formed BIOES is read as iob2 (S- as B-, E- as I-), as conlleval would score it:
        (["E-PER"], "bioes", [("PER", 0, 1)]),
        (["B-PER"], "bioes", [("PER", 0, 1)]),
        (["B-PER", "I-PER"], "bioes", [("PER", 0, 2)]),
        (["S-PER", "I-PER"], "bioes", [("PER", 0, 2)]),  # seqeval's own BIOES: 2 chunks
        (["B-PER", "E-PER", "I-PER"], "bioes", [("PER", 0, 3)]),  # seqeval's own: 2 chunks
        (["E-PER", "E-LOC"], "bioes", [("PER", 0, 1), ("LOC", 1, 2)]),
    ],
)
def test_hand_worked_spans(tags, scheme, spans):
    assert get_spans(tags, scheme) == spans


def test_iob_spans_match_seqeval_on_random_ill_formed_sequences():
    rng = random.Random(0)
    for _ in range(5000):
        tags = random_tags(rng, IOB_POOL)
        assert get_spans(tags, "iob2") == seqeval_spans(tags), tags
        assert get_spans(tags, "iob1") == get_spans(tags, "iob2")


def test_bioes_spans_are_conlleval_on_the_iob2_reading():
    rng = random.Random(1)
    for _ in range(5000):
        tags = random_tags(rng, BIOES_POOL)
        assert get_spans(tags, "bioes") == seqeval_spans(bioes_as_iob2(tags)), tags


def test_well_formed_bioes_spans_match_seqevals_own_bioes_reading():
    rng = random.Random(2)
    for _ in range(2000):
        length = rng.randint(0, 12)
        tags = emit(random_spans(rng, length), length, "bioes")
        assert get_spans(tags, "bioes") == seqeval_spans(tags), tags


# -- conversions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "source", "target", "expected"),
    [
        (
            ["I-PER", "B-PER", "O", "I-LOC", "I-LOC"],
            "iob1",
            "iob2",
            ["B-PER", "B-PER", "O", "B-LOC", "I-LOC"],
        ),
        (
            ["B-PER", "B-PER", "O", "B-LOC", "I-LOC"],
            "iob2",
            "iob1",
            ["I-PER", "B-PER", "O", "I-LOC", "I-LOC"],
        ),
        (
            ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "B-LOC"],
            "iob2",
            "bioes",
            ["B-PER", "I-PER", "E-PER", "O", "S-LOC", "S-LOC"],
        ),
        (
            ["S-LOC", "S-LOC", "B-PER", "E-PER"],
            "bioes",
            "iob1",
            ["I-LOC", "B-LOC", "I-PER", "I-PER"],
        ),
        # Ill-formed input goes through its chunks and comes out well-formed:
        (["I-PER", "I-LOC"], "iob2", "iob2", ["B-PER", "B-LOC"]),
        (["I-PER", "I-LOC"], "iob2", "bioes", ["S-PER", "S-LOC"]),
        (["B-PER", "I-LOC", "I-LOC"], "iob2", "bioes", ["S-PER", "B-LOC", "E-LOC"]),
        (["O", "B-PER"], "iob1", "iob1", ["O", "I-PER"]),
        (["B-PER", "I-PER"], "bioes", "bioes", ["B-PER", "E-PER"]),
        (["E-PER", "S-PER"], "bioes", "iob2", ["B-PER", "B-PER"]),
    ],
)
def test_hand_worked_conversions(tags, source, target, expected):
    assert convert_tags(tags, source, target) == expected


def test_convert_accepts_aliases_and_rejects_bad_tags():
    assert convert_tags(["B-A", "I-A"], "BIO", "IOBES") == ["B-A", "E-A"]
    with pytest.raises(TagSchemeError, match="'S-A'"):
        convert_tags(["S-A"], "iob2", "bioes")


@pytest.mark.parametrize(("source", "target"), list(itertools.permutations(SCHEMES, 2)))
def test_round_trips_on_random_well_formed_sequences(source, target):
    rng = random.Random(f"{source}-{target}")
    for _ in range(1000):
        length = rng.randint(0, 12)
        spans = random_spans(rng, length)
        tags = emit(spans, length, source)
        assert get_spans(tags, source) == spans
        converted = convert_tags(tags, source, target)
        assert converted == emit(spans, length, target)
        assert get_spans(converted, target) == spans
        assert convert_tags(converted, target, source) == tags


@pytest.mark.parametrize("source", SCHEMES)
@pytest.mark.parametrize("target", SCHEMES)
def test_ill_formed_input_converts_to_well_formed_output_keeping_chunks(source, target):
    rng = random.Random(f"ill-{source}-{target}")
    for _ in range(1000):
        tags = random_tags(rng, POOLS[source])
        spans = get_spans(tags, source)
        converted = convert_tags(tags, source, target)
        assert len(converted) == len(tags)
        assert converted == emit(spans, len(tags), target)
        assert get_spans(converted, target) == spans


# -- constraints for CRF decoding ------------------------------------------------------------


def obeys(tags: list[str], tag_list: list[str], scheme: str) -> bool:
    allowed, allowed_start, allowed_end = allowed_transitions(tag_list, scheme)
    ids = [tag_list.index(t) for t in tags]
    if not ids:
        return True
    return (
        allowed_start[ids[0]]
        and allowed_end[ids[-1]]
        and all(allowed[a][b] for a, b in itertools.pairwise(ids))
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_well_formed_random_sequences_use_only_allowed_transitions(scheme):
    prefixes = "BIES" if scheme == "bioes" else "BI"
    tag_list = ["O"] + [f"{p}-{t}" for t in ("X", "Y", "Z-Q") for p in prefixes]
    rng = random.Random(f"allowed-{scheme}")
    for _ in range(2000):
        length = rng.randint(0, 12)
        tags = emit(random_spans(rng, length), length, scheme)
        assert obeys(tags, tag_list, scheme), tags


@pytest.mark.parametrize("scheme", SCHEMES)
def test_constraints_allow_exactly_the_canonical_sequences(scheme):
    """Brute force: obeying every constraint is the same as being in canonical form."""
    tag_list = ["O", "B-X", "I-X", "B-Y", "I-Y"]
    if scheme == "bioes":
        tag_list += ["E-X", "S-X", "E-Y", "S-Y"]
    for length in range(5):
        for tags in itertools.product(tag_list, repeat=length):
            canonical = convert_tags(tags, scheme, scheme) == list(tags)
            assert obeys(list(tags), tag_list, scheme) == canonical, tags


def test_iob2_constraints_by_hand():
    tags = ["O", "B-X", "I-X", "B-Y", "I-Y"]
    allowed, allowed_start, allowed_end = allowed_transitions(tags, "bio")
    o, bx, ix, _by, iy = range(5)
    assert not allowed[o][ix]
    assert not allowed[bx][iy]
    assert not allowed[ix][iy]
    assert allowed[bx][ix] and allowed[ix][ix] and allowed[ix][o] and allowed[ix][bx]
    assert allowed_start == [True, True, False, True, False]
    assert all(allowed_end)


def test_iob1_constraints_by_hand():
    tags = ["O", "B-X", "I-X", "I-Y"]
    allowed, allowed_start, allowed_end = allowed_transitions(tags, "iob1")
    o, bx, ix, iy = range(4)
    assert allowed[ix][bx] and allowed[bx][bx]  # B- follows a chunk of its own type
    assert not allowed[o][bx] and not allowed[iy][bx] and not allowed_start[bx]
    assert allowed[o][ix] and allowed[iy][ix] and allowed_start[ix]
    assert all(allowed_end)


def test_bioes_constraints_by_hand():
    tags = ["O", "B-X", "I-X", "E-X", "S-X", "I-Y"]
    allowed, allowed_start, allowed_end = allowed_transitions(tags, "bioes")
    o, bx, ix, ex, sx, iy = range(6)
    assert not allowed[bx][o] and not allowed[bx][bx] and not allowed[bx][sx]
    assert not allowed[ix][o] and not allowed[bx][iy]
    assert allowed[bx][ix] and allowed[bx][ex] and allowed[ix][ex]
    assert not allowed[ex][ix] and not allowed[sx][ex] and not allowed[o][ex]
    assert allowed[ex][bx] and allowed[sx][sx] and allowed[ex][o]
    assert allowed_start == [True, True, False, False, True, False]
    assert allowed_end == [True, False, False, True, True, False]


def test_tags_outside_the_scheme_are_unconstrained():
    tags = ["<pad>", "O", "B-X", "I-X", "E-X"]
    allowed, allowed_start, allowed_end = allowed_transitions(tags, "iob2")
    assert all(allowed[0]) and all(row[0] for row in allowed)
    assert all(allowed[4]) and all(row[4] for row in allowed)  # E-X is not an iob2 tag
    assert allowed_start[0] and allowed_end[0]
    assert not allowed[1][3]
