"""Tag a corpus of JSON Lines or Parquet files with Ray Data, on one machine or a cluster.

Each input row holds a sentence's tokens (``{"tokens": ["The", "cat", "sat", "."], ...}``);
every row comes out with its other fields unchanged and a ``tags`` column added, in a folder of
files of the input's format (Ray writes one or more files per folder, in no set row order):

    pip install "seqtag[ray]"
    python examples/ray_tagging.py --ckpt_path runs/ud_ewt_upos/checkpoints/best.ckpt \
        --input sentences.jsonl --output tagged/ --concurrency 3  # on 4 or more cores

Without ``--address`` it starts a local Ray with ``--num-cpus`` cores (default: all); with
``--address auto`` it joins the running cluster (``ray start --head`` and ``ray start
--address ...`` on the others), where the checkpoint and input paths must be readable from
every node. ``--num-gpus 1`` gives each actor a GPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ray

from seqtag.integrations.ray_data import RayTagger

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def file_format(path: str) -> str:
    """``json`` or ``parquet``, from a file's suffix (``.jsonl``, ``.json``, ``.parquet``).

    A folder takes the format of its files.
    """
    location = Path(path)
    if location.is_dir():
        suffixes = {FORMATS.get(file.suffix) for file in location.iterdir() if file.is_file()}
        suffixes.discard(None)
        if len(suffixes) == 1:
            return suffixes.pop()
    elif location.suffix in FORMATS:
        return FORMATS[location.suffix]
    raise SystemExit(f"{path}: cannot tell the format; give --format json or --format parquet")


def tag_files(
    ckpt_path: str,
    input_path: str,
    output_path: str,
    *,
    input_format: str,
    output_format: str,
    concurrency: int = 1,
    batch_size: int = 1024,
    model_batch_size: int = 256,
    cpus_per_actor: float = 1,
    gpus_per_actor: float = 0,
    tokens_column: str = "tokens",
    confidences: bool = False,
) -> None:
    """Read, tag and write on the Ray that this process is connected to."""
    read = ray.data.read_json if input_format == "json" else ray.data.read_parquet
    dataset = read(input_path).map_batches(
        RayTagger,
        fn_constructor_kwargs={
            "ckpt_path": ckpt_path,
            "tokens_column": tokens_column,
            "model_batch_size": model_batch_size,
            "confidences": confidences,
        },
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        batch_size=batch_size,
        batch_format="pyarrow",
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor or None,
    )
    if output_format == "json":
        dataset.write_json(output_path)
    else:
        dataset.write_parquet(output_path)


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="a seqtag checkpoint")
    parser.add_argument("--input", required=True, help="a .jsonl/.parquet file, or a folder")
    parser.add_argument("--output", required=True, help="the folder to write to")
    parser.add_argument("--format", choices=["json", "parquet"], help="default: from --input")
    parser.add_argument("--output-format", choices=["json", "parquet"], help="default: --format")
    parser.add_argument("--tokens-column", default="tokens")
    parser.add_argument("--confidences", action="store_true", help="add a confidences column")
    parser.add_argument(
        "--address", help="a running Ray cluster ('auto'); default: start a local one"
    )
    parser.add_argument(
        "--num-cpus", type=int, help="cores of the local Ray (default: all of this machine's)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="tagging actors, each with its own copy of the model; leave cores for reading and "
        "writing: actors x --cpus-per-actor below the cluster's cores (default 1)",
    )
    parser.add_argument("--cpus-per-actor", type=float, default=1, help="torch threads per actor")
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs per actor (e.g. 1, 0.5)")
    parser.add_argument(
        "--batch-size", type=int, default=1024, help="rows per call of an actor (default 1024)"
    )
    parser.add_argument(
        "--model-batch-size", type=int, default=256, help="sentences per forward pass"
    )
    options = parser.parse_args(args)
    input_format = options.format or file_format(options.input)
    if options.address:
        ray.init(address=options.address)
    else:
        ray.init(num_cpus=options.num_cpus, include_dashboard=False)
        cores = ray.cluster_resources().get("CPU", 0)
        if options.concurrency * options.cpus_per_actor >= cores:
            ray.shutdown()
            # Ray would start the actors, leave its read tasks no core, and wait for ever.
            raise SystemExit(
                f"{options.concurrency} actor(s) of {options.cpus_per_actor:g} core(s) take all "
                f"{cores:g} cores of this Ray, and reading and writing need one: lower "
                "--concurrency or --cpus-per-actor"
            )
    try:
        tag_files(
            options.ckpt_path,
            options.input,
            options.output,
            input_format=input_format,
            output_format=options.output_format or input_format,
            concurrency=options.concurrency,
            batch_size=options.batch_size,
            model_batch_size=options.model_batch_size,
            cpus_per_actor=options.cpus_per_actor,
            gpus_per_actor=options.num_gpus,
            tokens_column=options.tokens_column,
            confidences=options.confidences,
        )
    finally:
        ray.shutdown()
    print(f"wrote {options.output}")


if __name__ == "__main__":
    main()
