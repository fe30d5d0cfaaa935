"""Every shipped config parses against the current signatures."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO

from seqtag.cli import main

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
