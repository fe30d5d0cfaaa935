"""End to end through the ``seqtag`` command: fit, test, predict on a slice of EWT."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from seqtag.cli.main import main
from seqtag.training.module import SequenceTagger

CONFIG = REPO / "configs" / "ud_ewt_upos.yaml"


def _args(ewt_slice: dict[str, Path], run: Path) -> list[str]:
    return [
        "--config",
        str(CONFIG),
        f"--data.train_path={ewt_slice['train']}",
        f"--data.val_path={ewt_slice['dev']}",
        f"--data.test_path={ewt_slice['test']}",
        "--trainer.max_epochs=3",
        f"--trainer.default_root_dir={run}",
        f"--trainer.logger.init_args.save_dir={run}",
        f"--checkpoint.dirpath={run / 'checkpoints'}",
        "--model.init_args.hidden_size=64",
        "--data.batch_size=8",
        "--trainer.enable_progress_bar=false",
    ]


@pytest.fixture(scope="module")
def trained(ewt_slice, tmp_path_factory) -> tuple[list[str], Path]:
    run = tmp_path_factory.mktemp("run")
    args = _args(ewt_slice, run)
    main(["fit", *args])
    return args, run / "checkpoints" / "best.ckpt"


def _printed_metric(text: str, name: str) -> float:
    match = re.search(rf"{name}\s*[│|]?\s*([0-9.]+)", text)
    assert match, f"{name} not printed:\n{text}"
    return float(match.group(1))


def test_fit_writes_best_and_last_checkpoints(trained):
    _, best = trained
    assert best.is_file()
    assert (best.parent / "last.ckpt").is_file()


def test_last_checkpoint_follows_every_epoch_even_when_the_score_does_not_improve(
    ewt_slice, tmp_path
):
    """With a learning rate of 0 only the first epoch "improves" val_acc: best.ckpt stays at
    epoch 0, and last.ckpt (what a resumed run continues from) must still be the last epoch."""
    run = tmp_path / "frozen"
    main(
        [
            "fit",
            *_args(ewt_slice, run),
            "--optimizer=SGD",
            "--optimizer.lr=0",
            "--trainer.limit_train_batches=3",
            "--trainer.limit_val_batches=2",
        ]
    )
    folder = run / "checkpoints"
    best = torch.load(folder / "best.ckpt", weights_only=True, map_location="cpu")
    last = torch.load(folder / "last.ckpt", weights_only=True, map_location="cpu")
    assert (best["epoch"], best["global_step"]) == (0, 3)
    assert (last["epoch"], last["global_step"]) == (2, 9)
    assert sorted(path.name for path in folder.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_checkpoint_is_plain_data_with_vocabularies(trained):
    _, best = trained
    checkpoint = torch.load(best, weights_only=True, map_location="cpu")
    vocabularies = checkpoint["seqtag"]["vocabularies"]
    assert "NOUN" in vocabularies["tags"]["items"]
    assert len(vocabularies["words"]["items"]) > 1000
    assert checkpoint["hyper_parameters"]["embedding_dim"] == 100


def test_cli_test_scores_the_checkpoint(trained, capsys):
    args, best = trained
    main(["test", *args, f"--ckpt_path={best}"])
    accuracy = _printed_metric(capsys.readouterr().out, "test_acc")
    # 300 training sentences and 3 epochs: far above the 17-tag chance level.
    assert 0.65 < accuracy <= 1.0


def test_cli_predict_plain_text_keeps_tokens_and_order(trained, tmp_path):
    args, best = trained
    text = tmp_path / "input.txt"
    sentences = ["The cat sat on the mat .", "I LOVE New York in 1999 !", "Hello"]
    text.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    output = tmp_path / "tags.conll"
    main(
        [
            "predict",
            *args,
            f"--ckpt_path={best}",
            f"--data.predict_path={text}",
            "--data.predict_format=text",
            f"--prediction.output={output}",
            "--prediction.confidences=true",
        ]
    )
    blocks = output.read_text(encoding="utf-8").strip("\n").split("\n\n")
    assert len(blocks) == len(sentences)
    for sentence, block in zip(sentences, blocks, strict=True):
        rows = [line.split("\t") for line in block.splitlines()]
        assert [row[0] for row in rows] == sentence.split()
        assert all(0.0 <= float(row[2]) <= 1.0 for row in rows)
    first = [line.split("\t")[1] for line in blocks[0].splitlines()]
    assert first[0] == "DET" and first[-1] == "PUNCT"


def test_python_api_tags_without_trainer_or_data(trained):
    _, best = trained
    tagger = SequenceTagger.load_from_checkpoint(best, map_location="cpu")
    result = tagger.tag([["The", "dog", "barks", "."], [], ["Yes"]])
    assert [len(s) for s in result] == [4, 0, 1]
    assert result[0][0][0] == "DET" and result[0][3][0] == "PUNCT"
    assert all(0.0 <= conf <= 1.0 for sentence in result for _, conf in sentence)


def test_print_config_parses_back(trained, tmp_path, capsys):
    args, _ = trained
    with pytest.raises(SystemExit):
        main(["fit", *args, "--print_config"])
    printed = capsys.readouterr().out
    dumped = tmp_path / "config.yaml"
    dumped.write_text(printed, encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(dumped), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load(printed)


def test_optimizer_and_scheduler_from_the_command_line(trained, tmp_path, capsys):
    args, _ = trained
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                *args,
                "--optimizer=SGD",
                "--optimizer.lr=0.1",
                "--lr_scheduler=StepLR",
                "--lr_scheduler.step_size=2",
                "--print_config",
            ]
        )
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["optimizer"]["class_path"] == "torch.optim.SGD"
    assert config["optimizer"]["init_args"]["lr"] == 0.1
    assert config["lr_scheduler"]["class_path"] == "torch.optim.lr_scheduler.StepLR"


def test_console_script_and_module_help():
    result = subprocess.run(
        [sys.executable, "-m", "seqtag", "fit", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--data.train_path" in result.stdout
    assert "--model" in result.stdout


def test_bad_corpus_is_one_line_error(ewt_slice, tmp_path):
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tThe\tthe\tDET\n", encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqtag",
            "fit",
            *_args(ewt_slice, tmp_path / "run"),
            f"--data.train_path={bad}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("seqtag: error: ")
    assert f"{bad}:1:" in last and "10" in last


@pytest.mark.slow
def test_shared_ewt_one_epoch_end_to_end(tmp_path, capsys):
    """The shared-data config on the full EWT corpus, shortened to one epoch of a small model."""
    from conftest import shared_path

    shared_path("ud_en_ewt", "en_ewt-ud-train.conllu")
    shared_path("embeddings", "w2v-en-100d.bin")
    config = REPO / "configs" / "ud_ewt_upos_shared.yaml"
    run = tmp_path / "run"
    args = [
        "--config",
        str(config),
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={run}",
        f"--trainer.logger.init_args.save_dir={run}",
        f"--checkpoint.dirpath={run / 'checkpoints'}",
        "--model.init_args.hidden_size=64",
        "--trainer.enable_progress_bar=false",
    ]
    main(["fit", *args])
    capsys.readouterr()
    main(["test", *args, f"--ckpt_path={run / 'checkpoints' / 'best.ckpt'}"])
    assert _printed_metric(capsys.readouterr().out, "test_acc") > 0.87


def test_predict_to_stdout_prints_only_conll(trained, tmp_path):
    args, best = trained
    text = tmp_path / "input.txt"
    text.write_text("The dog barks .\nYes\n", encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqtag",
            "predict",
            *args,
            f"--ckpt_path={best}",
            f"--data.predict_path={text}",
            "--data.predict_format=text",
            "--trainer.enable_progress_bar=true",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["The", "dog", "barks", ".", "", "Yes", ""]
    assert all(len(line.split("\t")) == 2 for line in lines if line)


def test_confusion_matrix_png_after_test(trained, tmp_path):
    args, best = trained
    image = tmp_path / "confusion.png"
    main(
        [
            "test",
            *args,
            f"--ckpt_path={best}",
            "--trainer.callbacks+=seqtag.training.reports.ConfusionMatrixPlot",
            "--trainer.callbacks.top_k=5",
            f"--trainer.callbacks.output={image}",
        ]
    )
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_optimizer_and_scheduler_sections_train_the_model(ewt_slice, tmp_path):
    run = tmp_path / "sgd"
    main(
        [
            "fit",
            *_args(ewt_slice, run),
            "--trainer.max_epochs=1",
            "--optimizer=SGD",
            "--optimizer.lr=0.1",
            "--lr_scheduler=StepLR",
            "--lr_scheduler.step_size=2",
        ]
    )
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    (group,) = checkpoint["optimizer_states"][0]["param_groups"]
    assert group["initial_lr"] == 0.1 and "momentum" in group  # SGD's, not Adam's
    assert checkpoint["lr_schedulers"][0]["step_size"] == 2


def test_predict_and_test_with_only_the_checkpoint(trained, tmp_path, capsys):
    """A person handed a checkpoint has no config: model and data options come from it."""
    args, best = trained
    text = tmp_path / "input.txt"
    text.write_text("The cat sat on the mat .\nHello\n", encoding="utf-8")
    outputs = []
    for extra in ([], args):
        output = tmp_path / f"tags{len(outputs)}.conll"
        main(
            [
                "predict",
                *extra,
                f"--ckpt_path={best}",
                f"--data.predict_path={text}",
                "--data.predict_format=text",
                f"--prediction.output={output}",
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )
        outputs.append(output.read_text(encoding="utf-8"))
    assert outputs[0] == outputs[1] and outputs[0].count("\n\n") == 2
    capsys.readouterr()
    main(["test", *args, f"--ckpt_path={best}"])
    with_config = _printed_metric(capsys.readouterr().out, "test_acc")
    main(["test", f"--ckpt_path={best}", f"--trainer.default_root_dir={tmp_path}"])
    assert _printed_metric(capsys.readouterr().out, "test_acc") == with_config


def test_second_fit_never_overwrites_the_first_runs_checkpoints(trained, capsys):
    args, best = trained
    before = best.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--trainer.max_epochs=1"])
    assert exit_info.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("seqtag: error: ") and "already holds best.ckpt" in message
    assert "--ckpt_path" in message and "--checkpoint.dirpath" in message
    assert best.read_bytes() == before


def test_top_level_help_lists_export_and_version():
    help_text = subprocess.run(
        [sys.executable, "-m", "seqtag", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "export" in help_text and "Lightning Trainer command line tool" not in help_text
    version = subprocess.run(
        [sys.executable, "-m", "seqtag", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert re.match(r"seqtag \d+\.\d+\.\d+ \(torch .+, lightning .+\)", version)


def test_hparams_yaml_records_the_embedding_width(trained):
    _, best = trained
    hparams = best.parents[1] / "logs" / "version_0" / "hparams.yaml"  # written by the fit
    assert yaml.safe_load(hparams.read_text())["embedding_dim"] == 100


def test_an_unwritable_checkpoint_folder_fails_before_training(ewt_slice, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n", encoding="utf-8")
    run = tmp_path / "run"
    args = [*_args(ewt_slice, run), f"--checkpoint.dirpath={blocker / 'checkpoints'}"]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    assert exit_info.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("seqtag: error: ") and "is a file" in message
    assert not (run / "logs").exists() or not any((run / "logs").rglob("metrics.csv"))


def test_export_to_a_directory_is_one_line(trained, tmp_path):
    _, best = trained
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqtag",
            "export",
            f"--ckpt_path={best}",
            "--format=torchscript",
            f"--output={tmp_path}",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("is a directory, expected a file name")
