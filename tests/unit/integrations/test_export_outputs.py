"""``seqtag export`` writes only its own two files, whole, and never over what it was given.

Both the model file and its ``.vocab.json`` sidecar get the checks of every seqtag output (a
symbolic link there is refused, not followed), neither may be the checkpoint being exported
(by name, symbolic link or hard link), and a failed export leaves earlier files as they were.
The temporary files behind every atomic write (seqtag.files.outputs) are created exclusively.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from conftest import REPO, assert_one_line_error, run_seqtag, train_checkpoint

from seqtag.data.datamodule import TaggingDataModule
from seqtag.integrations.export import export
from seqtag.training.module import SequenceTagger

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = REPO / "tests" / "fixtures" / "tiny.conllu"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Two small trained checkpoints (softmax and CRF), so that two exports differ."""
    paths = {}
    for decoder in ("softmax", "crf"):
        folder = tmp_path_factory.mktemp(decoder)
        data = TaggingDataModule(train_path=str(TINY), batch_size=2)
        model = SequenceTagger(hidden_size=8, embedding_dim=8, decoder=decoder)
        paths[decoder] = train_checkpoint(folder, data, model)
    return paths


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export(cwd: Path, checkpoint: Path, output: Path, fmt: str = "torchscript"):
    return run_seqtag(
        "export", "--ckpt_path", str(checkpoint), "--format", fmt, "--output", str(output), cwd=cwd
    )


@pytest.mark.parametrize("target_exists", [True, False], ids=["existing", "dangling"])
def test_a_symbolic_link_at_the_vocabulary_sidecar_is_refused(models, tmp_path, target_exists):
    victim = tmp_path / "victim.json"
    if target_exists:
        victim.write_text("precious\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    sidecar = out / "m.onnx.vocab.json"
    sidecar.symlink_to(victim)
    result = _export(tmp_path, models["softmax"], out / "m.onnx", "onnx")
    assert_one_line_error(result, f"{sidecar}: is a symbolic link")
    if target_exists:
        assert victim.read_text(encoding="utf-8") == "precious\n"
    else:
        assert not victim.exists()
    assert sorted(p.name for p in out.iterdir()) == ["m.onnx.vocab.json"]
    assert sidecar.is_symlink()


@pytest.mark.parametrize("how", ["same name", "symbolic link", "hard link", "as the sidecar"])
def test_export_never_writes_over_its_own_checkpoint(models, tmp_path, how):
    name = "m.pt.vocab.json" if how == "as the sidecar" else "model.ckpt"
    checkpoint = tmp_path / name
    checkpoint.write_bytes(models["softmax"].read_bytes())
    before = _digest(checkpoint)
    output = tmp_path / "m.pt"
    refused = output
    if how == "same name":
        output = refused = checkpoint
    elif how == "symbolic link":
        output.symlink_to(checkpoint)
    elif how == "hard link":
        os.link(checkpoint, output)
    else:
        refused = checkpoint
    result = _export(tmp_path, checkpoint, output)
    assert_one_line_error(
        result, f"{refused}: is the checkpoint being exported (--ckpt_path), which writing it"
    )
    assert _digest(checkpoint) == before
    if how == "as the sidecar":
        assert not output.exists()


def test_exporting_again_replaces_both_files_whole(models, tmp_path):
    output = tmp_path / "m.pt"
    sidecar = tmp_path / "m.pt.vocab.json"
    result = _export(tmp_path, models["softmax"], output)
    assert result.returncode == 0, result.stderr
    first = _digest(output), _digest(sidecar)
    result = _export(tmp_path, models["crf"], output)
    assert result.returncode == 0, result.stderr
    assert (_digest(output), _digest(sidecar)) != first
    assert '"decoder": "crf"' in sidecar.read_text(encoding="utf-8")
    umask = os.umask(0)
    os.umask(umask)
    for path in (output, sidecar):  # the mode a plain open() gives, not a temporary file's
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.vocab.json"]


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_failed_export_leaves_the_earlier_files_as_they_were(models, tmp_path, monkeypatch, fmt):
    pytest.importorskip("onnx")
    output = tmp_path / "m.out"
    sidecar = tmp_path / "m.out.vocab.json"
    export(str(models["softmax"]), fmt, str(output))
    before = _digest(output), _digest(sidecar)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("seqtag.integrations.export.export_vocabulary", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export(str(models["crf"]), fmt, str(output))
    assert (_digest(output), _digest(sidecar)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.out", "m.out.vocab.json"]


def test_a_link_left_at_a_temporary_name_is_never_followed(tmp_path):
    """Outputs are written under fresh temporary names (created exclusively), so a symbolic
    link someone left at the name seqtag used to use (``NAME.tmp``) points nowhere it writes."""
    from seqtag.files.outputs import write_text_atomically

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n", encoding="utf-8")
    target = tmp_path / "progress.json"
    (tmp_path / "progress.json.tmp").symlink_to(victim)
    write_text_atomically(target, "{}\n")
    assert target.read_text(encoding="utf-8") == "{}\n" and not target.is_symlink()
    assert victim.read_text(encoding="utf-8") == "precious\n"
