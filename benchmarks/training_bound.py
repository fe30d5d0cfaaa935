"""How fast can BiLSTM training go on this CPU? seqtag against flair, and the LSTM's own ceiling.

    python benchmarks/training_bound.py [--epochs 3] [--steps 100] \\
        [--flair /work/flairenv/bin/python] [--output benchmarks/training_bound.json]

For each decoder (softmax, CRF), on EWT UPOS with the shared 100-d vectors, BiLSTM 1 x 256,
batches of 32 sentences (``run.py``'s recipe), with seqtag's default optimizer (fused Adam) and
with flair's (plain SGD at 0.1, what flair's own ``speed`` run trains with):

1. **Training tokens/s through a plain ``Trainer``**: ``--epochs`` full epochs, the best one
   (other processes on a shared machine only ever slow an epoch down).
2. **Where a step goes**: a whole epoch (or ``--steps``) of training steps of the same model,
   batches collated ahead, timed, then again under ``torch.profiler``.
   The oneDNN LSTM kernels (``aten::mkldnn_rnn_layer`` and its backward) are timed on their
   own; their arithmetic (``3 x`` the forward FLOPs of the padded tokens: forward, input and
   weight gradients) over that time is the kernels' GFLOP/s, set against this machine's
   ``torch.mm`` peak (1024 x 1024 float32, measured here, same threads) and against ``torch.mm``
   at the recurrent product's own small shape (``[32, 256] x [256, 1024]``). Real tokens over
   the kernel time is the **ceiling**: the tokens/s training would reach if everything but
   the LSTM kernels (embeddings, dropout, loss, CRF, optimizer, Lightning) took no time.
3. **The LSTM kernel in bfloat16** (CPUs whose oneDNN has a bfloat16 LSTM: AVX-512 BF16):
   forward + backward of one direction at the mean batch shape, float32 against bfloat16.
4. With ``--flair``, flair 0.15.1's ``flair_baseline.py speed`` for both decoders right after,
   so that the ratios (seqtag / flair, ceiling / flair) come from one run on one machine; each
   variant is set against flair with the same decoder.

Prints a table and writes JSON. Run it alone: nothing else should use the cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from run import (  # noqa: E402
    BATCH_SIZE,
    DEFAULT_DATA,
    EMBEDDING_DIM,
    data_paths,
    lstm_forward_flops_per_token,
    machine_info,
    matmul_peak_gflops,
    report_missing_data,
)

HIDDEN = 256
DECODERS = ("softmax", "crf")
#: Variants: (decoder, optimizer). seqtag's default is fused Adam; flair's ``speed`` run trains
#: with its own default, plain SGD, so the SGD variants compare the same optimizer.
VARIANTS = {
    "softmax": ("softmax", "adam"),
    "crf": ("crf", "adam"),
    "softmax_sgd": ("softmax", "sgd"),
    "crf_sgd": ("crf", "sgd"),
}


def sgd(parameters) -> torch.optim.Optimizer:
    """flair's default optimizer in its ``speed`` run: SGD at 0.1, no momentum."""
    return torch.optim.SGD(parameters, lr=0.1)


LSTM_KERNELS = ("aten::mkldnn_rnn_layer", "aten::mkldnn_rnn_layer_backward")


def build(variant: str, paths: dict[str, Path]):
    """A seeded DataModule (set up for fitting) and its model, as ``run.py`` builds them."""
    import lightning.pytorch as pl

    from seqtag import SequenceTagger, TaggingDataModule

    pl.seed_everything(42, verbose=False)
    data = TaggingDataModule(
        train_path=str(paths["train"]),
        format="conllu",
        tag_field="upos",
        batch_size=BATCH_SIZE,
        vectors=str(paths["vectors"]),
    )
    data.setup("fit")
    decoder, optimizer = VARIANTS[variant]
    model = SequenceTagger(
        spec=data.spec,
        hidden_size=HIDDEN,
        num_layers=1,
        dropout=0.25,
        decoder=decoder,
        optimizer=sgd if optimizer == "sgd" else None,
    )
    return data, model


def trainer_epoch_rates(model, data, epochs: int, limit_batches: int | None = None) -> list[float]:
    """Training tokens/s (real tokens) of each epoch of a plain, quiet ``Trainer.fit``."""
    import lightning.pytorch as pl

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.rates: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.tokens, self.start = 0, time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.tokens += int(batch["lengths"].sum())

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.rates.append(self.tokens / (time.perf_counter() - self.start))

    timer = EpochTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        limit_train_batches=limit_batches,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=data)
    return timer.rates


def kernel_profile(variant: str, paths: dict[str, Path], steps: int) -> dict:
    """Time of the LSTM kernels over ``steps`` training steps, and what it implies."""
    from torch.profiler import ProfilerActivity, profile

    data, model = build(variant, paths)
    made = model.configure_optimizers()
    optimizer = made["optimizer"] if isinstance(made, dict) else made
    batches = list(data.train_dataloader())  # one epoch, collated ahead
    steps = min(steps, len(batches)) if steps > 0 else len(batches)
    batches = batches[-10:] + batches[:steps]  # 10 warm-up steps, then the timed ones
    model.train()

    def step(batch: dict) -> None:
        loss = model.tagger.loss(model(batch), batch["tags"], batch["mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for batch in batches[:10]:
        step(batch)
    timed = batches[10:]
    start = time.perf_counter()
    for batch in timed:
        step(batch)
    step_seconds = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in timed:
            step(batch)
    kernel_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in LSTM_KERNELS)
    kernel_seconds = kernel_us / 1e6
    real = sum(int(b["lengths"].sum()) for b in timed)
    padded = sum(b["words"].numel() for b in timed)
    flops = 3 * lstm_forward_flops_per_token(EMBEDDING_DIM, HIDDEN) * padded
    return {
        "steps": steps,
        "real_tokens": real,
        "padded_tokens": padded,
        "step_ms": 1000 * step_seconds / steps,
        "tight_loop_tokens_per_s": real / step_seconds,
        "lstm_kernel_ms_per_step": 1000 * kernel_seconds / steps,
        "lstm_kernel_share_of_step": kernel_seconds / step_seconds,
        "lstm_kernel_gflops": flops / kernel_seconds / 1e9,
        "ceiling_tokens_per_s": real / kernel_seconds,
    }


def small_mm_gflops(rows: int, inner: int, cols: int, seconds: float = 1.0) -> float:
    """Best-of ``torch.mm`` rate at one small shape, in GFLOP/s."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    out = torch.empty(rows, cols)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        begin = time.perf_counter()
        for _ in range(20):
            torch.mm(a, b, out=out)
        best = max(best, 20 * 2 * rows * inner * cols / (time.perf_counter() - begin) / 1e9)
    return best


def lstm_kernel_ms(dtype: torch.dtype, length: int, repeats: int = 100) -> float | None:
    """Forward + backward of one LSTM direction on ``[32, length, 100]``; best of ``repeats``."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(EMBEDDING_DIM, HIDDEN, batch_first=True).to(dtype)
    inputs = torch.randn(BATCH_SIZE, length, EMBEDDING_DIM, dtype=dtype, requires_grad=True)
    try:
        best = float("inf")
        for index in range(repeats + 5):
            begin = time.perf_counter()
            output, _ = lstm(inputs)
            output.sum().backward()
            if index >= 5:
                best = min(best, time.perf_counter() - begin)
    except RuntimeError:  # no bfloat16 LSTM kernel on this CPU
        return None
    return 1000 * best


def flair_speed_report(python: Path, decoder: str, chars: str = "none") -> dict:
    """flair 0.15.1's ``flair_baseline.py speed`` report, run in flair's own environment."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "flair.json"
        command = [str(python), str(REPO / "benchmarks" / "flair_baseline.py"), "speed"]
        command += ["--decoder", decoder, "--chars", chars, "--json", str(out)]
        subprocess.run(command, check=True, capture_output=True, cwd=REPO)
        return json.loads(out.read_text(encoding="utf-8"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=3, help="Trainer epochs; the best counts")
    parser.add_argument(
        "--steps", type=int, default=0, help="profiled training steps (0: a whole epoch)"
    )
    parser.add_argument(
        "--limit-batches", type=int, help="Trainer batches per epoch (smoke runs; default all)"
    )
    parser.add_argument("--flair", type=Path, help="python of flair 0.15.1's venv")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "training_bound.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    paths = data_paths(args.data_root)
    if report_missing_data("training_bound.py", args.data_root):
        return 2
    result: dict = {
        "date": date.today().isoformat(),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info(),
        "matmul_peak_gflops": matmul_peak_gflops(),
        "recurrent_mm_gflops": small_mm_gflops(BATCH_SIZE, HIDDEN, 4 * HIDDEN),
        "variants": {},
    }
    for variant in VARIANTS:
        data, model = build(variant, paths)
        rates = trainer_epoch_rates(model, data, args.epochs, args.limit_batches)
        profile_data = kernel_profile(variant, paths, args.steps)
        profile_data["trainer_epoch_tokens_per_s"] = [round(rate) for rate in rates]
        profile_data["trainer_tokens_per_s"] = max(rates)
        profile_data["lstm_kernel_share_of_matmul_peak"] = (
            profile_data["lstm_kernel_gflops"] / result["matmul_peak_gflops"]
        )
        result["variants"][variant] = profile_data
    softmax = result["variants"]["softmax"]
    mean_length = round(softmax["padded_tokens"] / (softmax["steps"] * BATCH_SIZE))
    float32_ms = lstm_kernel_ms(torch.float32, mean_length)
    bfloat16_ms = lstm_kernel_ms(torch.bfloat16, mean_length)
    result["lstm_direction_fwd_bwd_ms"] = {
        "shape": [BATCH_SIZE, mean_length, EMBEDDING_DIM],
        "float32": float32_ms,
        "bfloat16": bfloat16_ms,
        "bfloat16_speedup": float32_ms / bfloat16_ms if bfloat16_ms else None,
    }
    if args.flair:
        flair_rates = {
            decoder: flair_speed_report(args.flair, decoder)["train_tokens_per_second"]
            for decoder in DECODERS
        }
        for variant, (decoder, _) in VARIANTS.items():
            entry = result["variants"][variant]
            flair = flair_rates[decoder]
            entry["flair_tokens_per_s"] = flair
            entry["ratio_over_flair"] = entry["trainer_tokens_per_s"] / flair
            entry["ceiling_over_flair"] = entry["ceiling_tokens_per_s"] / flair
            entry["five_times_flair_share_of_ceiling"] = 5 * flair / entry["ceiling_tokens_per_s"]
    print(format_table(result))
    args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"written to {args.output}")
    return 0


def format_table(result: dict) -> str:
    rows = [
        ("Trainer tokens/s (best epoch)", "trainer_tokens_per_s", "{:,.0f}"),
        ("tight loop tokens/s", "tight_loop_tokens_per_s", "{:,.0f}"),
        ("step ms", "step_ms", "{:.2f}"),
        ("LSTM kernels ms / step", "lstm_kernel_ms_per_step", "{:.2f}"),
        ("LSTM kernels share of step", "lstm_kernel_share_of_step", "{:.1%}"),
        ("LSTM kernels GFLOP/s", "lstm_kernel_gflops", "{:.1f}"),
        ("  share of the matmul peak", "lstm_kernel_share_of_matmul_peak", "{:.1%}"),
        ("ceiling tokens/s (LSTM only)", "ceiling_tokens_per_s", "{:,.0f}"),
        ("flair tokens/s", "flair_tokens_per_s", "{:,.0f}"),
        ("seqtag / flair", "ratio_over_flair", "{:.2f}x"),
        ("ceiling / flair", "ceiling_over_flair", "{:.2f}x"),
        ("5x flair, share of ceiling", "five_times_flair_share_of_ceiling", "{:.1%}"),
    ]
    head = "".join(f" {variant:>11} |" for variant in VARIANTS)
    lines = [f"| {'':30} |{head}", f"|{'-' * 32}|" + f"{'-' * 13}|" * len(VARIANTS)]
    for label, key, fmt in rows:
        cells = ""
        for variant in VARIANTS:
            value = result["variants"][variant].get(key)
            cells += f" {fmt.format(value) if value is not None else '':>11} |"
        lines.append(f"| {label:30} |{cells}")
    kernel = result["lstm_direction_fwd_bwd_ms"]
    lines.append(
        f"matmul peak {result['matmul_peak_gflops']:.1f} GFLOP/s (1024^3), "
        f"{result['recurrent_mm_gflops']:.1f} at [32,256]x[256,1024]; one LSTM direction "
        f"fwd+bwd at {kernel['shape']}: float32 {kernel['float32']:.2f} ms, bfloat16 "
        + (f"{kernel['bfloat16']:.2f} ms" if kernel["bfloat16"] else "not supported")
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
