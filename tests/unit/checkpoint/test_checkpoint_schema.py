"""Edited, damaged and foreign checkpoints: one line naming the file, in every entry point.

Each case is a checkpoint as a user might meet it (a tag removed from the vocabulary, a hidden
size edited, a tensor saved with ``torch.save``, a truncated ``last.ckpt``...). Python users get
a :class:`~seqtag.errors.CheckpointError`; the CLI prints one line and exits 1. A fuzz test over
checkpoint dictionaries accepts only a working model or that error.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_one_line_error, run_seqtag, train_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqtag import SequenceTagger, TaggingDataModule
from seqtag.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = str(REPO / "tests" / "fixtures" / "tiny.conllu")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A softmax word model and a CRF model with characters, trained for one epoch."""
    folder = tmp_path_factory.mktemp("ckpts")
    made = {}
    for name, options in {
        "words": {"hidden_size": 8},
        "crf_chars": {"hidden_size": 8, "decoder": "crf", "char_features": "cnn"},
    }.items():
        data = TaggingDataModule(train_path=TINY, val_path=TINY, batch_size=2)
        (folder / name).mkdir()
        made[name] = train_checkpoint(folder / name, data, SequenceTagger(**options))
    return made


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _tags(checkpoint: dict) -> list:
    return checkpoint["seqtag"]["vocabularies"]["tags"]["items"]


def _set(path: list, value):
    def edit(checkpoint: dict) -> None:
        target = checkpoint
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _drop(path: list):
    def edit(checkpoint: dict) -> None:
        target = checkpoint
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return edit


EDITS = {
    "a tag removed": (lambda c: _tags(c).pop(), "do not fit|has shape"),
    "a tag duplicated": (lambda c: _tags(c).__setitem__(-1, _tags(c)[0]), "unique"),
    "no words": (_drop(["seqtag", "vocabularies", "words"]), "vocabularies are damaged"),
    "no state_dict": (_drop(["state_dict"]), "'state_dict'"),
    "no hyper-parameters": (_drop(["hyper_parameters"]), "hyper_parameters"),
    "hyper-parameters a list": (_set(["hyper_parameters"], [1, 2]), "hyper_parameters"),
    "hidden size edited": (_set(["hyper_parameters", "hidden_size"], 16), "has shape"),
    "decoder edited": (_set(["hyper_parameters", "decoder"], "crf"), "no weights"),
    "decoder unknown": (_set(["hyper_parameters", "decoder"], "bogus"), "decoder='bogus'"),
    "hidden size a string": (_set(["hyper_parameters", "hidden_size"], "big"), "hidden_size"),
    "dropout out of range": (_set(["hyper_parameters", "dropout"], 5.0), "dropout"),
    "argument of a newer seqtag": (
        _set(["hyper_parameters", "attention_heads"], 4),
        "newer seqtag",
    ),
    "weight of another shape": (
        _set(["state_dict", "tagger.emission.weight"], torch.zeros(3, 3)),
        "has shape",
    ),
    "weight not a tensor": (_set(["state_dict", "tagger.emission.bias"], [1.0]), "tensor"),
    "unknown weight": (_set(["state_dict", "tagger.extra"], torch.zeros(2)), "unknown weights"),
    "missing weight": (_drop(["state_dict", "tagger.emission.bias"]), "no weights"),
    "NaN weights": (
        lambda c: c["state_dict"]["tagger.emission.weight"].fill_(float("nan")),
        "NaN",
    ),
    "no Lightning version": (_drop(["pytorch-lightning_version"]), "pytorch-lightning_version"),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_edited_checkpoint_is_one_error_in_load_from_checkpoint(checkpoints, tmp_path, case):
    edit, message = EDITS[case]
    checkpoint = _load(checkpoints["words"])
    edit(checkpoint)
    path = tmp_path / "edited.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=message) as caught:
        SequenceTagger.load_from_checkpoint(path)
    assert str(path) in str(caught.value)


def test_characters_removed_from_a_character_model(checkpoints, tmp_path):
    checkpoint = _load(checkpoints["crf_chars"])
    checkpoint["seqtag"]["vocabularies"]["chars"] = None
    path = tmp_path / "nochars.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(Exception, match="character vocabulary") as caught:
        SequenceTagger.load_from_checkpoint(path)
    assert isinstance(caught.value, (CheckpointError, ValueError))


@pytest.mark.parametrize("payload", [torch.zeros(3), [1, 2, 3], {"a": 1}], ids=str)
def test_other_objects_saved_with_torch_save_are_refused(tmp_path, payload):
    path = tmp_path / "other.ckpt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"not a seqtag checkpoint|not a complete"):
        SequenceTagger.load_from_checkpoint(path)


def test_truncated_checkpoint_is_refused(checkpoints, tmp_path):
    path = tmp_path / "cut.ckpt"
    path.write_bytes(checkpoints["words"].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        SequenceTagger.load_from_checkpoint(path)


def test_plain_trainer_resuming_from_a_weights_only_checkpoint(checkpoints, tmp_path):
    """``Trainer.fit(ckpt_path=...)`` from a file without training state: what is missing."""
    import lightning.pytorch as pl

    checkpoint = _load(checkpoints["words"])
    del checkpoint["loops"]
    path = tmp_path / "weights.ckpt"
    torch.save(checkpoint, path)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False)
    data = TaggingDataModule(train_path=TINY, batch_size=2)
    with pytest.raises(CheckpointError, match=r"cannot resume training.*'loops'"):
        trainer.fit(SequenceTagger(hidden_size=8), datamodule=data, ckpt_path=path)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["a tag removed", "hidden size edited", "NaN weights"])
def test_edited_checkpoint_in_every_cli_entry_point(checkpoints, tmp_path, case):
    edit, message = EDITS[case]
    checkpoint = _load(checkpoints["words"])
    edit(checkpoint)
    path = tmp_path / "edited.ckpt"
    torch.save(checkpoint, path)
    text = tmp_path / "in.txt"
    text.write_text("a b\n", encoding="utf-8")
    out, model = tmp_path / "out.txt", tmp_path / "model.pt"
    commands = [
        ["test", f"--ckpt_path={path}", f"--data.test_path={TINY}", "--trainer.logger=false"],
        [
            "predict",
            f"--ckpt_path={path}",
            f"--data.predict_path={text}",
            f"--prediction.output={out}",
        ],
        ["export", f"--ckpt_path={path}", "--format=torchscript", f"--output={model}"],
        ["fit", f"--ckpt_path={path}", f"--data.train_path={TINY}", "--trainer.logger=false"],
    ]
    commands[1].append("--data.predict_format=text")
    commands[3].append(f"--checkpoint.dirpath={tmp_path / 'run'}")
    for command in commands:
        assert_one_line_error(run_seqtag(*command, cwd=tmp_path), message.split("|")[-1])
    assert not out.exists() and not model.exists()


@pytest.mark.slow
def test_truncated_last_checkpoint_found_by_ckpt_path_last(checkpoints, tmp_path):
    """``--ckpt_path last`` is resolved by Lightning; the file it finds is checked too."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.ckpt").write_bytes(checkpoints["words"].read_bytes()[:5000])
    result = run_seqtag(
        "fit",
        "--ckpt_path=last",
        f"--data.train_path={TINY}",
        f"--checkpoint.dirpath={run}",
        "--trainer.max_epochs=2",
        "--trainer.logger=false",
        "--model.hidden_size=8",
        cwd=tmp_path,
    )
    assert_one_line_error(result, "truncated or damaged")
    assert str(run / "last.ckpt") in result.stderr


# -- fuzz -------------------------------------------------------------------------------------

_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(0, 3), max_size=3),
    st.builds(torch.zeros, st.integers(0, 4)),
)


def _paths(value, prefix=()):
    """Every key path of nested dictionaries (tensors and lists are leaves)."""
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*prefix, key))


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzzed_checkpoints_load_or_raise_one_checkpoint_error(checkpoints, tmp_path, data):
    """Keys removed, types changed, values edited: a working model or a CheckpointError."""
    original = _load(checkpoints["words"])
    checkpoint = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(checkpoint) if p]
        path = data.draw(st.sampled_from(sorted(paths, key=repr)))
        parent = checkpoint
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(_VALUES)
        if not isinstance(checkpoint, dict):
            break
    target = tmp_path / "fuzzed.ckpt"  # overwritten by every example
    torch.save(checkpoint, target)
    try:
        model = SequenceTagger.load_from_checkpoint(target)
    except CheckpointError:
        return
    result = model.tag([["a", "b"]])
    assert len(result) == 1 and len(result[0]) == 2
