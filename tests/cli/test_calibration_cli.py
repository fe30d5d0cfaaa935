"""Temperature calibration through the ``seqtag`` command: fit, calibrate, test."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import REPO, assert_one_line_error, run_seqtag

from seqtag.calibration.temperature import collect_dev_set, full_dev_batches
from seqtag.cli.main import main
from seqtag.data.datamodule import TaggingDataModule
from seqtag.training.module import SequenceTagger

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = REPO / "configs" / "ud_ewt_upos.yaml"


def _args(ewt_slice: dict[str, Path], run: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(CONFIG),
        f"--data.train_path={ewt_slice['train']}",
        f"--data.val_path={ewt_slice['dev']}",
        f"--data.test_path={ewt_slice['test']}",
        "--trainer.max_epochs=2",
        f"--trainer.default_root_dir={run}",
        f"--trainer.logger.init_args.save_dir={run}",
        f"--checkpoint.dirpath={run / 'checkpoints'}",
        "--model.init_args.hidden_size=16",
        "--data.batch_size=16",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *extra,
    ]


@pytest.fixture(scope="module")
def calibrated(ewt_slice, tmp_path_factory) -> tuple[list[str], Path]:
    run = tmp_path_factory.mktemp("calibrated")
    args = _args(ewt_slice, run)
    main(["fit", *args])
    return args, run / "checkpoints"


@pytest.fixture(scope="module")
def uncalibrated(ewt_slice, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uncalibrated")
    main(["fit", *_args(ewt_slice, run, "--calibration.enabled=false", "--trainer.max_epochs=1")])
    return run / "checkpoints" / "best.ckpt"


def _temperature(path: Path) -> float:
    return float(torch.load(path, weights_only=True)["state_dict"]["tagger.temperature"])


def _dev_nll(path: Path, dev: Path, temperature: float) -> float:
    model = SequenceTagger.load_from_checkpoint(path)
    data = TaggingDataModule(val_path=str(dev))
    data.encode_with(model.vocabularies)
    nll = collect_dev_set(model, full_dev_batches(data)).nll(model.tagger)
    with torch.no_grad():
        return float(nll(torch.tensor(temperature, dtype=torch.float64)))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fit_stores_a_temperature_that_lowers_the_dev_nll(calibrated, ewt_slice):
    _, folder = calibrated
    for name in ("best.ckpt", "last.ckpt"):
        temperature = _temperature(folder / name)
        assert temperature != 1.0
        fitted = _dev_nll(folder / name, ewt_slice["dev"], temperature)
        assert fitted < _dev_nll(folder / name, ewt_slice["dev"], 1.0)


def test_calibration_enabled_false_leaves_the_temperature_at_one(uncalibrated):
    assert _temperature(uncalibrated) == 1.0


def test_calibrate_writes_a_new_file_and_never_touches_the_old(
    uncalibrated, ewt_slice, tmp_path, capsys
):
    source = tmp_path / "model.ckpt"
    source.write_bytes(uncalibrated.read_bytes())
    before = _digest(source)
    main(["calibrate", f"--ckpt_path={source}", f"--data.val_path={ewt_slice['dev']}"])
    out = capsys.readouterr().out
    written = tmp_path / "model.calibrated.ckpt"
    assert written.is_file() and _digest(source) == before
    temperature = _temperature(written)
    assert temperature != 1.0 and f"temperature: {temperature:.4f}" in out
    assert "dev NLL per token" in out and "dev token ECE (15 equal-width bins)" in out
    new, old = torch.load(written, weights_only=True), torch.load(source, weights_only=True)
    assert new.keys() == old.keys() and new["seqtag"] == old["seqtag"]
    for key, value in old["state_dict"].items():
        if key != "tagger.temperature":
            assert torch.equal(new["state_dict"][key], value), key
    # The new checkpoint tags with its temperature, the same tags as the old one.
    calibrated_model = SequenceTagger.load_from_checkpoint(written)
    assert float(calibrated_model.tagger.temperature) == pytest.approx(temperature)
    sentence = [["The", "dog", "barks", "."]]
    tags_new = [t for t, _ in calibrated_model.tag(sentence)[0]]
    tags_old = [t for t, _ in SequenceTagger.load_from_checkpoint(source).tag(sentence)[0]]
    assert tags_new == tags_old
    # Run again: the output exists, and is refused in one line; so is the input as output.
    for extra in ([], [f"--output={source}"]):
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "calibrate",
                    f"--ckpt_path={source}",
                    f"--data.val_path={ewt_slice['dev']}",
                    *extra,
                ]
            )
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("seqtag: error: ")
    assert _digest(source) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["calibrate", "--data.val_path=x.conllu"],  # no --ckpt_path
        ["calibrate", "--ckpt_path=missing.ckpt", "--data.val_path=x.conllu"],
        ["calibrate", "--ckpt_path=m.ckpt", "--data.val_path=x", "--data.eval_batch_size=0"],
        ["calibrate", "--ckpt_path=m.ckpt", "--data.val_path=x", "--data.format=yaml"],
        ["calibrate", "--ckpt_path=m.ckpt", "--data.val_path=x", "--bogus=1"],
    ],
)
def test_calibrate_bad_arguments_are_one_line(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code in (1, 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seqtag: error: "), err


def test_calibrate_a_missing_dev_file_is_one_line(uncalibrated, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "calibrate",
                f"--ckpt_path={uncalibrated}",
                f"--data.val_path={tmp_path / 'nothing.conllu'}",
                f"--output={tmp_path / 'out.ckpt'}",
            ]
        )
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing.conllu" in err[0]
    assert not (tmp_path / "out.ckpt").exists()


@pytest.mark.parametrize("how", ["same name", "symbolic link", "hard link"])
def test_calibrate_never_writes_over_its_checkpoint_however_it_is_named(tmp_path, how):
    """One rule with ``seqtag export`` (seqtag.files.outputs.refuse_same_file), checked first."""
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"the user's model")
    output = tmp_path / "out.ckpt"
    if how == "same name":
        output = tmp_path / "." / "model.ckpt"
    elif how == "symbolic link":
        output.symlink_to(checkpoint)
    else:
        os.link(checkpoint, output)
    result = run_seqtag(
        "calibrate",
        f"--ckpt_path={checkpoint}",
        f"--data.val_path={REPO / 'tests' / 'fixtures' / 'tiny.conllu'}",
        f"--output={output}",
        cwd=tmp_path,
    )
    assert_one_line_error(result, f"{output}: is the checkpoint being calibrated (--ckpt_path)")
    assert checkpoint.read_bytes() == b"the user's model"


def test_calibration_enabled_bad_value_is_one_line(ewt_slice, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *_args(ewt_slice, tmp_path, "--calibration.enabled=maybe")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seqtag: error: ") and "calibration" in err[0]


def test_seqtag_test_prints_ece_and_writes_the_reliability_diagram(calibrated, tmp_path, capsys):
    args, folder = calibrated
    main(
        [
            "test",
            *args,
            f"--ckpt_path={folder / 'best.ckpt'}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    out = capsys.readouterr().out
    assert "calibration (ECE over 15 equal-width confidence bins" in out
    for name in ("test_ece", "test_ece_uncalibrated", "test_skipped_tokens"):
        assert name in out
    (png,) = tmp_path.rglob("reliability.png")
    assert png.stat().st_size > 1000
    assert (png.parent / "reliability.json").is_file()
    assert not (png.parent / "span_reliability.png").exists()  # POS: no spans
    report = json.loads((png.parent / "reliability.json").read_text(encoding="utf-8"))
    assert sum(b["count"] for b in report["token"]["calibrated"]) > 0
    (metrics,) = tmp_path.rglob("metrics.csv")
    logged = [row for row in csv.DictReader(metrics.open(encoding="utf-8")) if row["test_ece"]]
    assert report["token"]["ece"] == pytest.approx(float(logged[-1]["test_ece"]), abs=1e-6)


def test_reliability_files_can_be_turned_off_and_never_land_in_the_working_folder(
    calibrated, tmp_path, monkeypatch
):
    args, folder = calibrated
    monkeypatch.chdir(tmp_path)
    common = ["test", *args, f"--ckpt_path={folder / 'best.ckpt'}"]
    main([*common, "--trainer.logger=false"])
    main(
        [
            *common,
            f"--trainer.logger.init_args.save_dir={tmp_path / 'off'}",
            "--reliability.enabled=false",
        ]
    )
    assert not list(tmp_path.rglob("reliability*"))
