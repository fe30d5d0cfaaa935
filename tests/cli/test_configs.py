"""Every shipped config parses against the current signatures, round-trips, and trains."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO

from seqtag.cli.main import main

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
OVERLAYS = sorted((REPO / "configs").glob("*/*.yaml"))


def _print_config(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_parses_and_round_trips(config, capsys, tmp_path):
    text = _print_config(capsys, "--config", str(config))
    printed = yaml.safe_load(text)
    assert printed["model"]["class_path"] == "seqtag.SequenceTagger"
    monitor = printed["checkpoint"]["monitor"]
    # Span tasks select models by span F1, POS tagging by accuracy.
    assert monitor == ("val_f1" if printed["data"]["tag_scheme"] else "val_acc")
    # The printed config is a config: parsed again, it prints the same run.
    full = tmp_path / "full.yaml"
    full.write_text(text, encoding="utf-8")
    assert yaml.safe_load(_print_config(capsys, "--config", str(full))) == printed


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.stem)
def test_overlay_applies_after_a_task_config(overlay, capsys):
    settings = yaml.safe_load(overlay.read_text(encoding="utf-8"))
    base = REPO / "configs" / "ud_ewt_upos.yaml"
    printed = yaml.safe_load(_print_config(capsys, "--config", str(base), "--config", str(overlay)))
    for section, values in settings.items():
        for key, value in values.items():
            assert printed[section][key] == value, f"{section}.{key}"


def test_every_config_is_tested_and_listed_in_the_docs():
    """The parametrized tests take every file under configs/, and docs/cli.md lists each."""
    shipped = {str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*.yaml")}
    assert shipped == {str(p.relative_to(REPO / "configs")) for p in CONFIGS + OVERLAYS}
    table = [
        line
        for line in (REPO / "docs" / "cli.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `")
    ]
    listed = {name for line in table for name in re.findall(r"`(?:configs/)?([\w/]+\.yaml)`", line)}
    assert listed == shipped


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_trains_and_its_checkpoint_loads_weights_only(config, ewt_slice, tmp_path):
    """Each shipped config, pointed at tiny data, writes a checkpoint that is plain data."""
    import torch

    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    run = tmp_path / "run"
    args = [
        "fit",
        "--config",
        str(config),
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        f"--trainer.default_root_dir={run}",
        f"--trainer.logger.init_args.save_dir={run}",
        f"--checkpoint.dirpath={run / 'checkpoints'}",
        "--model.init_args.hidden_size=8",
        "--trainer.enable_progress_bar=false",
    ]
    if settings["data"]["format"] == "conllu":
        args += [
            f"--data.train_path={ewt_slice['train']}",
            f"--data.val_path={ewt_slice['dev']}",
            f"--data.test_path={ewt_slice['test']}",
            "--data.vectors=data/vectors/w2v-en-100d-ewt.bin",
        ]
    else:
        tiny = REPO / "tests" / "fixtures" / "tiny.conll2003.txt"
        args += [f"--data.train_path={tiny}", f"--data.test_path={tiny}"]
        if settings["data"].get("val_from_train"):
            args += ["--data.val_from_train=1"]
        else:
            args += [f"--data.val_path={tiny}"]
        if settings["data"].get("vectors"):
            args += ["--data.vectors=data/vectors/w2v-en-100d-ewt.bin"]
    main(args)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    vocabularies = checkpoint["seqtag"]["vocabularies"]
    assert vocabularies["tags"]["items"]
    assert vocabularies["corpus_scheme"] == settings["data"].get("tag_scheme")
