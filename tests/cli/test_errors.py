"""Bad input ends as one line ``seqtag: error: FILE[:LINE]: what`` and a non-zero status.

Every case runs the real command (``python -m seqtag ...``) in its own process on a tiny valid
setup with one thing broken, and checks the exit status, that no traceback is printed and that
the last stderr line names the file, the line and the problem.

Importing torch and Lightning takes most of a run's time, so the cases share one runner
process that imports ``seqtag.cli.main`` once and forks a fresh child per case; the child runs
``seqtag/__main__.py`` with its own ``sys.argv``, stdout, stderr and exit status, just as
``python -m seqtag`` would. Where ``os.fork`` is missing each case is a plain subprocess, and
one test checks that a plain ``python -m seqtag`` prints the same line as the runner.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

CONFIG = "configs/ud_ewt_upos.yaml"
WORDS = ["The", "cat", "sat", ".", "A", "dog", "ran", "Anna", "lives", "in", "Paris"]

CONLLU = """\
# sent_id = 1
1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_
2\tcat\tcat\tNOUN\tNN\t_\t3\tnsubj\t_\t_
3\tsat\tsit\tVERB\tVBD\t_\t0\troot\t_\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

1\tA\ta\tDET\tDT\t_\t2\tdet\t_\t_
2\tdog\tdog\tNOUN\tNN\t_\t3\tnsubj\t_\t_
3\tran\trun\tVERB\tVBD\t_\t0\troot\t_\t_
"""

COLUMNS = "Anna B-PER\nlives O\nin O\nParis B-LOC\n. O\n\nThe O\ncat O\nsat O\n"

# The runner: import the slow modules once, then one forked child per case, which runs
# seqtag/__main__.py like `python -m seqtag` and ends the way the interpreter would.
RUNNER = """
import json, os, runpy, sys, traceback
import seqtag.cli.main
for case in json.loads(sys.stdin.read()):
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            for fd, name in ((1, case["stdout"]), (2, case["stderr"])):
                os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            os.environ.update(case["env"])
            sys.argv = ["seqtag", *case["argv"]]
            try:
                runpy.run_module("seqtag", run_name="__main__", alter_sys=True)
                status = 0
            except SystemExit as exit:
                if exit.code is None or isinstance(exit.code, int):
                    status = exit.code or 0
                else:
                    print(exit.code, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def _vector_file(path: Path, dim: int, header_dim: int | None = None) -> Path:
    """A word2vec text file with a vector for every word of the tiny corpora."""
    rng = random.Random(0)
    lines = [f"{len(WORDS)} {header_dim or dim}"]
    for word in WORDS:
        lines.append(" ".join([word, *(f"{rng.uniform(-1, 1):.3f}" for _ in range(dim))]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Valid corpora and vectors, and one broken file per case."""
    d = tmp_path_factory.mktemp("errors")
    f: dict[str, Path] = {"dir": d, "run": d / "run"}

    def text(name: str, content: str) -> None:
        f[name] = d / name
        f[name].write_text(content, encoding="utf-8")

    def binary(name: str, content: bytes) -> None:
        f[name] = d / name
        f[name].write_bytes(content)

    lines = CONLLU.splitlines(keepends=True)
    text("train.conllu", CONLLU)
    text("dev.conllu", CONLLU)
    text("nine_fields.conllu", "".join([*lines[:2], lines[2].replace("\tNN\t", "\t"), *lines[3:]]))
    text("dev_eleven.conllu", "".join([lines[0], lines[1].rstrip("\n") + "\t_\n", *lines[2:]]))
    text("no_upos.conllu", "".join([lines[0], lines[1].replace("\tDET\t", "\t_\t"), *lines[2:]]))
    text("bad_id.conllu", "".join([lines[0], lines[1].replace("1\t", "x\t", 1), *lines[2:]]))
    text("empty.conllu", "")
    text("comments.conllu", "# sent_id = 1\n# text = nothing\n\n")
    binary("latin1.conllu", CONLLU.replace("cat\tcat", "caf\xe9\tcaf\xe9").encode("latin-1"))
    binary("garbage.conllu.gz", b"\x1f\x8b\x08\x00 not really gzip")
    f["missing.conllu"] = d / "missing.conllu"
    f["a_directory"] = d / "a_directory"
    f["a_directory"].mkdir()

    text("train.iob", COLUMNS)
    text("three_columns.iob", COLUMNS.replace("in O", "in IN O"))
    text("one_column.iob", "Anna\nlives\n\n")
    text("x_per.iob", COLUMNS.replace("Anna B-PER", "Anna X-PER"))
    text("b_dash.iob", COLUMNS.replace("Paris B-LOC", "Paris B-"))

    f["vec100.txt"] = _vector_file(d / "vec100.txt", 100)
    f["vec4.txt"] = _vector_file(d / "vec4.txt", 4)
    f["short_rows.txt"] = _vector_file(d / "short_rows.txt", 4, header_dim=100)
    text("not_vectors.txt", "these are not\nword vectors at all\n")
    binary("not_vectors.bin", bytes(range(256)) * 4)
    f["missing.vec"] = d / "missing.vec"

    text("unknown_data_key.yaml", yaml.safe_dump({"data": {"no_such_key": 3}}))
    text(
        "unknown_model_key.yaml",
        yaml.safe_dump(
            {"model": {"class_path": "seqtag.SequenceTagger", "init_args": {"hidden_sise": 8}}}
        ),
    )

    f["plain_dict.ckpt"] = d / "plain_dict.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "epoch": 1}, f["plain_dict.ckpt"])
    binary("random.ckpt", random.Random(1).randbytes(512))
    binary("empty.ckpt", b"")
    f["missing.ckpt"] = d / "missing.ckpt"
    return f


def _fit(f: dict[str, Path], *overrides: str) -> list[str]:
    """``seqtag fit`` on the tiny CoNLL-U corpus with 100-d vectors, plus overrides."""
    run = f["run"]
    return [
        "fit",
        "--config",
        CONFIG,
        f"--data.train_path={f['train.conllu']}",
        f"--data.val_path={f['dev.conllu']}",
        "--data.test_path=null",
        f"--data.vectors={f['vec100.txt']}",
        "--trainer.max_epochs=1",
        "--model.init_args.hidden_size=8",
        f"--trainer.default_root_dir={run}",
        "--trainer.logger=false",
        f"--checkpoint.dirpath={run / 'checkpoints'}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *overrides,
    ]


def _fit_columns(f: dict[str, Path], train: str, *overrides: str) -> list[str]:
    return _fit(
        f,
        "--data.format=columns",
        f"--data.train_path={f[train]}",
        "--data.val_path=null",
        "--data.vectors=null",
        *overrides,
    )


def _test(f: dict[str, Path], *overrides: str) -> list[str]:
    return [
        "test",
        "--config",
        CONFIG,
        f"--data.test_path={f['dev.conllu']}",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={f['run']}",
        *overrides,
    ]


@dataclass
class Case:
    """A command line and what its last stderr line must contain (``{name}``: a file path)."""

    id: str
    argv: Callable[[dict[str, Path]], list[str]]
    expected: list[str]
    status: int = 1
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    # -- corpora ------------------------------------------------------------------------------
    Case(
        "conllu-nine-fields",
        lambda f: _fit(f, f"--data.train_path={f['nine_fields.conllu']}"),
        ["{nine_fields.conllu}:3: expected 10 tab-separated fields (CoNLL-U), found 9"],
    ),
    Case(
        "conllu-dev-eleven-fields",
        lambda f: _fit(f, f"--data.val_path={f['dev_eleven.conllu']}"),
        ["{dev_eleven.conllu}:2: expected 10 tab-separated fields (CoNLL-U), found 11"],
    ),
    Case(
        "conllu-tag-missing",
        lambda f: _fit(f, f"--data.train_path={f['no_upos.conllu']}", "--data.missing_tag=null"),
        ["{no_upos.conllu}:2: UPOS column is '_'"],
    ),
    Case(
        "conllu-non-numeric-id",
        lambda f: _fit(f, f"--data.train_path={f['bad_id.conllu']}"),
        ["{bad_id.conllu}:2: ID 'x' is not a number"],
    ),
    Case(
        "empty-file",
        lambda f: _fit(f, f"--data.train_path={f['empty.conllu']}"),
        ["{empty.conllu}: file is empty, expected a CoNLL-U corpus"],
    ),
    Case(
        "no-sentences",
        lambda f: _fit(f, f"--data.train_path={f['comments.conllu']}"),
        ["{comments.conllu}: no sentences found"],
    ),
    Case(
        "invalid-utf8",
        lambda f: _fit(f, f"--data.train_path={f['latin1.conllu']}"),
        ["{latin1.conllu}:3: invalid UTF-8 (byte 0xe9 at column 6)"],
    ),
    Case(
        "corrupt-gzip",
        lambda f: _fit(f, f"--data.train_path={f['garbage.conllu.gz']}"),
        ["{garbage.conllu.gz}: corrupt or truncated gzip file"],
    ),
    Case(
        "missing-corpus",
        lambda f: _fit(f, f"--data.train_path={f['missing.conllu']}"),
        ["{missing.conllu}: no such file"],
    ),
    Case(
        "directory-as-corpus",
        lambda f: _fit(f, f"--data.val_path={f['a_directory']}"),
        ["{a_directory}: is a directory, expected a file"],
    ),
    Case(
        "columns-count",
        lambda f: _fit_columns(f, "three_columns.iob"),
        ["{three_columns.iob}:3: expected 2 columns like line 1, found 3"],
    ),
    Case(
        "columns-tag-column-missing",
        lambda f: _fit_columns(f, "one_column.iob"),
        ["{one_column.iob}:1: tag column -1 is the token column 0"],
    ),
    Case(
        "columns-tag-column-out-of-range",
        lambda f: _fit_columns(f, "train.iob", "--data.tag_column=2"),
        ["{train.iob}:1: tag column 2 does not exist: the line has 2 columns"],
    ),
    Case(
        "iob2-unknown-prefix",
        lambda f: _fit_columns(f, "x_per.iob", "--data.tag_scheme=iob2"),
        ["{x_per.iob}:1: ", "'X-PER'"],
    ),
    Case(
        "iob2-prefix-without-type",
        lambda f: _fit_columns(f, "b_dash.iob", "--data.tag_scheme=iob2"),
        ["{b_dash.iob}:1: ", "'B-'"],
    ),
    # -- vectors ------------------------------------------------------------------------------
    Case(
        "vectors-no-format",
        lambda f: _fit(f, f"--data.vectors={f['not_vectors.txt']}"),
        ["{not_vectors.txt}:1: not a recognised vector file"],
    ),
    Case(
        "vectors-binary-garbage",
        lambda f: _fit(f, f"--data.vectors={f['not_vectors.bin']}"),
        ["{not_vectors.bin}: not a recognised vector file"],
    ),
    Case(
        "vectors-100d-for-embedding-dim-50",
        lambda f: _fit(f, "--model.init_args.embedding_dim=50"),
        ["{vec100.txt}: vectors have dimension 100, but ", "embedding_dim is 50"],
    ),
    Case(
        "vectors-4d-for-embedding-dim-100",
        lambda f: _fit(f, f"--data.vectors={f['vec4.txt']}", "--model.init_args.embedding_dim=100"),
        ["{vec4.txt}: vectors have dimension 4, but ", "embedding_dim is 100"],
    ),
    Case(
        "vectors-rows-shorter-than-header",
        lambda f: _fit(f, f"--data.vectors={f['short_rows.txt']}"),
        ["{short_rows.txt}:2: expected 100 numbers after the word 'The'", "found 4"],
    ),
    Case(
        "vectors-missing",
        lambda f: _fit(f, f"--data.vectors={f['missing.vec']}"),
        ["{missing.vec}: no such file"],
    ),
    # -- command line and config ----------------------------------------------------------------
    Case(
        "unknown-option",
        lambda f: _fit(f, "--data.no_such_key", "1"),
        ["unrecognized arguments: --data.no_such_key 1", "seqtag fit --help"],
        status=2,
    ),
    Case(
        "unknown-key-in-yaml",
        lambda f: _fit(f, "--config", str(f["unknown_data_key.yaml"])),
        ["data.no_such_key: no such option (see seqtag fit --help)"],
        status=2,
    ),
    Case(
        "unknown-model-key-in-yaml",
        lambda f: _fit(f, "--config", str(f["unknown_model_key.yaml"])),
        ["model.init_args.hidden_sise: no such option"],
        status=2,
    ),
    Case(
        "bad-value",
        lambda f: _fit(f, "--data.batch_size=many"),
        ["data.batch_size: must be an integer >= 1, got many (see seqtag fit --help)"],
        status=2,
    ),
    Case(
        "unknown-subcommand",
        lambda f: ["tset", "--config", CONFIG],
        ["invalid choice: 'tset'"],
        status=2,
    ),
    # -- checkpoints ----------------------------------------------------------------------------
    Case(
        "ckpt-plain-dict",
        lambda f: _test(f, f"--ckpt_path={f['plain_dict.ckpt']}"),
        ["{plain_dict.ckpt}: not a seqtag checkpoint: it has no 'seqtag' section"],
    ),
    Case(
        "ckpt-random-bytes",
        lambda f: _test(f, f"--ckpt_path={f['random.ckpt']}"),
        ["{random.ckpt}: not a seqtag checkpoint: torch.load cannot read it"],
    ),
    Case(
        "ckpt-empty",
        lambda f: _test(f, f"--ckpt_path={f['empty.ckpt']}"),
        ["{empty.ckpt}: not a seqtag checkpoint: the file is empty"],
    ),
    Case(
        "ckpt-config-as-checkpoint",
        lambda f: _test(f, f"--ckpt_path={REPO / CONFIG}"),
        [f"{REPO / CONFIG}: not a seqtag checkpoint: torch.load cannot read it"],
    ),
    Case(
        "ckpt-missing",
        lambda f: _test(f, f"--ckpt_path={f['missing.ckpt']}"),
        ["{missing.ckpt}: no such file"],
    ),
    Case(
        "ckpt-directory",
        lambda f: _test(f, f"--ckpt_path={f['a_directory']}"),
        ["{a_directory}: is a directory"],
    ),
    Case(
        "ckpt-not-given",
        lambda f: _test(f),
        ["seqtag test needs a trained model: pass --ckpt_path"],
        status=2,
    ),
]

DEBUG_CASES = {
    "debug-flag": (lambda f: _fit(f, f"--data.train_path={f['missing.conllu']}", "--debug"), {}),
    "debug-env": (
        lambda f: _fit(f, f"--data.train_path={f['missing.conllu']}"),
        {"SEQTAG_DEBUG": "1"},
    ),
}
EXIT_ZERO_CASES = {
    "help": lambda f: _fit(f, "--help"),
    "print-config": lambda f: _fit(f, "--print_config"),
}


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SEQTAG_DEBUG", "JSONARGPARSE_DEBUG")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_cases(jobs: dict[str, tuple[list[str], dict[str, str]]], folder: Path) -> dict:
    """Run ``seqtag ARGV`` for every job; ``{id: (status, stdout, stderr)}``."""
    folder.mkdir(exist_ok=True)
    env = _environment()
    results = {}
    if hasattr(os, "fork"):
        batch = [
            {
                "argv": argv,
                "env": extra,
                "stdout": str(folder / f"{name}.out"),
                "stderr": str(folder / f"{name}.err"),
            }
            for name, (argv, extra) in jobs.items()
        ]
        runner = subprocess.run(
            [sys.executable, "-c", RUNNER],
            input=json.dumps(batch),
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=600,
        )
        statuses = [int(line) for line in runner.stdout.split()]
        assert len(statuses) == len(jobs), runner.stderr
        for (name, _), status in zip(jobs.items(), statuses, strict=True):
            out = (folder / f"{name}.out").read_text(encoding="utf-8")
            err = (folder / f"{name}.err").read_text(encoding="utf-8")
            results[name] = (status, out, err)
        return results
    for name, (argv, extra) in jobs.items():
        done = subprocess.run(
            [sys.executable, "-m", "seqtag", *argv],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**env, **extra},
            timeout=300,
        )
        results[name] = (done.returncode, done.stdout, done.stderr)
    return results


@pytest.fixture(scope="module")
def outcomes(files) -> dict[str, tuple[int, str, str]]:
    jobs = {case.id: (case.argv(files), case.env) for case in CASES}
    jobs.update({name: (argv(files), env) for name, (argv, env) in DEBUG_CASES.items()})
    jobs.update({name: (argv(files), {}) for name, argv in EXIT_ZERO_CASES.items()})
    return run_cases(jobs, files["dir"] / "outcomes")


def _last_line(stderr: str) -> str:
    lines = stderr.rstrip("\n").splitlines()
    return lines[-1] if lines else ""


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_is_one_line_error(case, files, outcomes):
    status, _, stderr = outcomes[case.id]
    last = _last_line(stderr)
    assert "Traceback" not in stderr, stderr
    assert status == case.status, stderr
    assert last.startswith("seqtag: error: "), stderr
    for fragment in case.expected:
        for name, path in files.items():
            fragment = fragment.replace(f"{{{name}}}", str(path))
        assert fragment in last, f"{fragment!r} not in {last!r}"
    # the error is the only line from seqtag after the logging lines; nothing follows it
    assert stderr.count("seqtag: error:") == 1, stderr


@pytest.mark.parametrize("name", DEBUG_CASES)
def test_debug_shows_the_traceback(name, files, outcomes):
    status, _, stderr = outcomes[name]
    assert status == 1
    assert "Traceback" in stderr and "CorpusFormatError" in stderr, stderr
    assert f"{files['missing.conllu']}: no such file" in stderr


def test_help_and_print_config_still_exit_zero(outcomes, files):
    status, stdout, stderr = outcomes["help"]
    assert status == 0 and "--data.train_path" in stdout, stderr
    assert "error" not in _last_line(stderr)
    status, stdout, stderr = outcomes["print-config"]
    assert status == 0, stderr
    assert yaml.safe_load(stdout)["data"]["train_path"] == str(files["train.conllu"])


def test_runner_matches_plain_python_m_seqtag(files, outcomes):
    """The forked runner reports exactly what a plain ``python -m seqtag`` prints."""
    argv = CASES[0].argv(files)
    done = subprocess.run(
        [sys.executable, "-m", "seqtag", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_environment(),
        timeout=300,
    )
    status, _, stderr = outcomes[CASES[0].id]
    assert "Traceback" not in done.stderr
    assert (done.returncode, _last_line(done.stderr)) == (status, _last_line(stderr))
