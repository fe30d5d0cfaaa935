"""Every shipped config parses against the current signatures."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO

from seqtag.cli.main import main

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_config_parses_and_round_trips(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "seqtag.SequenceTagger"
    monitor = printed["checkpoint"]["monitor"]
    # Span tasks select models by span F1, POS tagging by accuracy.
    assert monitor == ("val_f1" if printed["data"]["tag_scheme"] else "val_acc")


def test_every_config_is_tested():
    assert len(CONFIGS) >= 5


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
