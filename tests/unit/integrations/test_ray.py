"""seqtag.integrations.ray_data.RayTagger on a local Ray, through examples/ray_tagging.py, against
tag() and the CLI.

A tiny CRF is trained on a synthetic chunking corpus written here; Ray then tags 200 JSON Lines
records that carry an id and a pass-through field, and every row must come back with its
fields and with the tags that ``model.tag()`` and ``seqtag predict`` give the same sentences.
"""

from __future__ import annotations

import importlib.util
import json
import random

import pytest

ray = pytest.importorskip("ray")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from conftest import REPO, train_checkpoint  # noqa: E402

from seqtag import ConfigError, SequenceTagger, TaggingDataModule  # noqa: E402
from seqtag.cli.main import main as seqtag_main  # noqa: E402
from seqtag.integrations.ray_data import RayTagger  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

NOUN_PHRASES = [["the", "dog"], ["a", "big", "cat"], ["every", "old", "red", "house"], ["it"]]
VERBS = ["sees", "likes", "runs", "finds"]
PREPOSITIONS = ["in", "on", "near"]


def _sentence(rng: random.Random) -> list[tuple[str, str]]:
    def phrase() -> list[tuple[str, str]]:
        words = rng.choice(NOUN_PHRASES)
        return [(w, "B-NP" if i == 0 else "I-NP") for i, w in enumerate(words)]

    tokens = [*phrase(), (rng.choice(VERBS), "B-VP"), *phrase()]
    if rng.random() < 0.5:
        tokens += [(rng.choice(PREPOSITIONS), "B-PP"), *phrase()]
    return [*tokens, (".", "O")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("ray-model")
    rng = random.Random(0)
    blocks = ["\n".join(f"{w} {t}" for w, t in _sentence(rng)) for _ in range(120)]
    (folder / "train.txt").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    data = TaggingDataModule(
        train_path=str(folder / "train.txt"), format="columns", tag_scheme="iob2", batch_size=8
    )
    model = SequenceTagger(hidden_size=16, decoder="crf")
    return str(train_checkpoint(folder, data, model, epochs=3))


@pytest.fixture(scope="module")
def model(checkpoint) -> SequenceTagger:
    return SequenceTagger.load_from_checkpoint(checkpoint, map_location="cpu")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _sentences(count: int) -> list[list[str]]:
    """Training-like sentences, with unknown words and a varied length."""
    rng = random.Random(1)
    sentences = []
    for i in range(count):
        tokens = [w for w, _ in _sentence(rng)]
        if i % 5 == 0:
            tokens.insert(1, rng.choice(["zebra", "café", "1,000", "Tallinn"]))
        sentences.append(tokens)
    return sentences


def _example():
    spec = importlib.util.spec_from_file_location("ray_tagging", REPO / "examples/ray_tagging.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cli_tags(checkpoint: str, sentences: list[list[str]], folder) -> list[list[str]]:
    """The second column of ``seqtag predict --data.predict_format text``, per sentence."""
    text = folder / "sentences.txt"
    text.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    output = folder / "predicted.tsv"
    seqtag_main(
        [
            "predict",
            f"--ckpt_path={checkpoint}",
            f"--data.predict_path={text}",
            "--data.predict_format=text",
            f"--prediction.output={output}",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
        ]
    )
    blocks = output.read_text(encoding="utf-8").strip("\n").split("\n\n")
    return [[line.split("\t")[1] for line in block.split("\n")] for block in blocks]


def test_ray_pipeline_keeps_every_field_and_tags_as_tag_and_the_cli(
    checkpoint, model, local_ray, tmp_path
):
    sentences = _sentences(200)
    records = [{"id": i, "tokens": s, "source": f"doc-{i % 7}"} for i, s in enumerate(sentences)]
    records.append({"id": 200, "tokens": [], "source": "empty"})  # no words: no tags
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    expected = [[tag for tag, _ in sentence] for sentence in model.tag(sentences)]
    assert expected == _cli_tags(checkpoint, sentences, tmp_path)
    expected.append([])

    # The example's pipeline (pyarrow batches), JSON Lines in and out; one actor of one core
    # leaves the other core to Ray's read and write tasks.
    _example().tag_files(
        checkpoint,
        str(corpus),
        str(tmp_path / "tagged"),
        input_format="json",
        output_format="json",
        batch_size=64,
        confidences=True,
    )
    rows = [
        json.loads(line)
        for part in sorted((tmp_path / "tagged").iterdir())
        for line in part.read_text(encoding="utf-8").splitlines()
    ]
    by_id = {row["id"]: row for row in rows}
    assert len(rows) == len(by_id) == len(records)  # every row once, in whatever order
    for record in records:
        row = by_id[record["id"]]
        assert row["source"] == record["source"]
        assert row["tokens"] == record["tokens"]
        assert row["tags"] == expected[record["id"]]
        assert len(row["confidences"]) == len(row["tags"])
        assert all(0.0 < p <= 1.0 for p in row["confidences"])

    # Ray's default numpy batches: the token lists must come back as a list column (not as
    # pickled Python objects), here written to Parquet.
    ray.data.read_json(str(corpus)).map_batches(
        RayTagger,
        fn_constructor_kwargs={"ckpt_path": checkpoint},
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=64,
        batch_format="numpy",
    ).write_parquet(str(tmp_path / "tagged-parquet"))
    table = pq.read_table(tmp_path / "tagged-parquet")
    for column in ("tokens", "tags"):
        assert table.schema.field(column).type == pa.list_(pa.string()), column
    tagged = {row["id"]: row for row in table.to_pylist()}
    assert {i: row["tags"] for i, row in tagged.items()} == dict(enumerate(expected))
    assert {i: row["source"] for i, row in tagged.items()} == {
        r["id"]: r["source"] for r in records
    }


# -- the adapter without a Ray cluster: batch formats and errors ---------------------------
@pytest.fixture(scope="module")
def tagger(checkpoint) -> RayTagger:
    return RayTagger(checkpoint, device="cpu")


def test_pandas_batches_get_a_tags_column(tagger, model):
    import pandas as pd

    sentences = _sentences(5)
    batch = pd.DataFrame({"tokens": sentences, "id": range(5)})
    out = tagger(batch)
    assert list(out.columns) == ["tokens", "id", "tags"]
    assert list(out["id"]) == list(range(5))
    assert list(out["tags"]) == [[t for t, _ in s] for s in model.tag(sentences)]
    assert "tags" not in batch.columns  # a new frame: Ray's batches may be read-only


def test_missing_tokens_column_names_the_columns(tagger):
    with pytest.raises(ConfigError, match=r"no column 'tokens' \(its columns: 'text', 'id'\)"):
        tagger({"text": ["a b"], "id": [1]})


def test_existing_tags_column_is_refused(tagger):
    with pytest.raises(ConfigError, match="already has a column 'tags'"):
        tagger({"tokens": [["the", "dog"]], "tags": [["B-NP", "I-NP"]]})


@pytest.mark.parametrize(
    ("tokens", "problem"),
    [
        ("the dog runs", r"holds 'the dog runs' \(str\); split each sentence into tokens"),
        (None, r"holds None \(NoneType\)"),
        (["the", 3], r"its token 1 is 3 \(int\)"),
    ],
)
def test_a_row_that_is_not_a_list_of_strings_is_named(tagger, tokens, problem):
    batch = {"tokens": [["the", "dog"], tokens], "id": [7, 8]}
    with pytest.raises(TypeError, match=rf"row 1 of the batch \(id=8\): .*{problem}"):
        tagger(batch)


@pytest.mark.parametrize("token", ["", "  ", "\u00a0"])
def test_an_invisible_token_is_refused_as_tag_refuses_it(tagger, token):
    batch = {"tokens": [["the", "dog"], ["the", token]], "id": [7, 8]}
    with pytest.raises(ValueError, match=r"row 1 of the batch \(id=8\): .*its token 1"):
        tagger(batch)


def test_unknown_batch_type_and_device_are_refused(tagger, checkpoint):
    with pytest.raises(TypeError, match="batch_format="):
        tagger([["the", "dog"]])
    with pytest.raises(ConfigError, match="device must be"):
        RayTagger(checkpoint, device="tpu")


def test_pyarrow_batch_of_empty_sentences_has_typed_columns(checkpoint):
    tagger = RayTagger(checkpoint, device="cpu", confidences=True)
    batch = pa.table({"tokens": pa.array([[], []], type=pa.list_(pa.string())), "id": [1, 2]})
    out = tagger(batch)
    assert out.schema.field("tags").type == pa.list_(pa.string())  # not list<null>
    assert out.schema.field("confidences").type == pa.list_(pa.float64())
    assert out.column("tags").to_pylist() == [[], []]
