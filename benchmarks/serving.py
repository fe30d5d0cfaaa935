"""``seqtag serve`` under load: throughput, latency and correctness against the ``tag()`` ceiling.

    python benchmarks/serving.py [--ckpt_path runs/ud_ewt_upos/checkpoints/best.ckpt]
        [--sentences 2077] [--requests 3000] [--max-seconds 120] [--concurrency 1 8 64]
        [--batch-clients 8] [--batch-sentences 32] [--soak-requests 100000]
        [--soak-concurrency 16] [--malformed 0.1] [--workers 1] [--max-batch-size 32]
        [--batch-timeout 0] [--output benchmarks/serving.json]

Starts ``seqtag serve`` on the checkpoint (by default the quick-start model, ``make
quickstart``) on a free port of 127.0.0.1, and drives it with an asynchronous HTTP/1.1 client
written for it (``http_load.py``: one process, ``N`` client tasks on keep-alive
connections, each sending its next request as soon as the last is answered), each scenario
bounded by ``--requests`` and ``--max-seconds``:

- ``tag()`` in this process on the UD English EWT test sentences (``data/``), batch 256, with
  spans, timed after one warm-up pass: the ceiling, and the expected answer of every sentence;
- 1, 8 and 64 clients (``--concurrency``) sending one sentence per request, and 8 clients
  (``--batch-clients``) sending 32 sentences per request: tokens/s, and p50/p95/p99 latency;
  every answer is compared with ``tag()``'s for its sentences (tags, confidences, spans);
- the soak: ``--soak-requests`` requests from ``--soak-concurrency`` clients, ``--malformed``
  of them malformed (each of a list of mistakes): counts of 5xx answers, of requests lost (no
  answer), of answers that are not their request's, and the server's resident memory (all its
  processes) at the end against after warm-up.

Then SIGTERM, and the server's exit status. Writes the numbers and the settings to
``--output`` and prints a table with the targets of issue 27 (at 64 clients >= 0.7x the
ceiling; p99 <= 150 ms at 8 clients; every answer identical). The client shares the machine
with the server: on a small machine it takes a share of the cores the server would use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from http_load import drive  # beside this script

REPO = Path(__file__).resolve().parents[1]
EWT_TEST = REPO / "data" / "ud_en_ewt" / "en_ewt-ud-test.conllu.gz"
QUICKSTART = REPO / "runs" / "ud_ewt_upos" / "checkpoints" / "best.ckpt"
FIELDS = ("tokens", "tags", "confidences", "spans")
MALFORMED = [
    b"not json",
    b'{"sentences": [["a", ""]]}',
    b'{"sentences": [["a", null]]}',
    b'{"sentences": ["The", "cat"]}',
    b'{"sentences": [["a\\u0000b"]]}',
    b'{"sentences": "The cat"}',
    b'{"sentence": [["The", "cat"]]}',
    b"[]",
]


def read_sentences(count: int) -> list[list[str]]:
    from seqtag.data.io.formats import iter_conllu

    sentences = []
    for sentence in iter_conllu(EWT_TEST):
        sentences.append(list(sentence.tokens))
        if len(sentences) == count:
            break
    return sentences


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (from ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and the processes below it."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and every process below it, in MiB."""
    total = 0
    for current in process_tree(pid):
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        rss = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")]
        total += int(rss[0]) if rss else 0
    return total / 1024


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "seqtag", "serve", "--ckpt_path", str(args.ckpt_path)]
    command += ["--port", str(port), "--workers", str(args.workers)]
    command += ["--max_batch_size", str(args.max_batch_size)]
    command += ["--batch_timeout", str(args.batch_timeout)]
    command += ["--max_sentences", str(max(1000, args.batch_sentences))]
    return subprocess.Popen(command, start_new_session=True)


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 300) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise SystemExit(f"serving.py: the server exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("serving.py: the server did not get ready")


def ceiling(args: argparse.Namespace, sentences: list[list[str]]) -> tuple[dict, list[dict]]:
    """``tag()`` in this process: tokens/s, and each sentence's expected answer."""
    import torch

    from seqtag import SequenceTagger

    model = SequenceTagger.load_from_checkpoint(args.ckpt_path, map_location="cpu").eval()
    model.tag(sentences[:256], batch_size=256, spans=True)  # warm-up
    start = time.perf_counter()
    found = model.tag(sentences, batch_size=256, spans=True)
    seconds = time.perf_counter() - start
    tokens = sum(len(s) for s in sentences)
    expected = [{key: s[key] for key in FIELDS} for s in found]
    numbers = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
    return {**numbers, "torch_threads": torch.get_num_threads()}, expected


def scenario_requests(count: int, per_request: int, total: int) -> list[list[int]]:
    return [[(n * per_request + k) % total for k in range(per_request)] for n in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", type=Path, default=QUICKSTART)
    parser.add_argument("--sentences", type=int, default=2077, help="EWT test sentences")
    parser.add_argument("--requests", type=int, default=3000, help="per scenario, at most")
    parser.add_argument("--max-seconds", type=float, default=120, help="per scenario, at most")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--batch-clients", type=int, default=8)
    parser.add_argument("--batch-sentences", type=int, default=32)
    parser.add_argument("--soak-requests", type=int, default=100_000)
    parser.add_argument("--soak-concurrency", type=int, default=16)
    parser.add_argument("--soak-max-seconds", type=float, default=3600)
    parser.add_argument("--malformed", type=float, default=0.1, help="share of the soak")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.0)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "serving.json")
    args = parser.parse_args()
    if not args.ckpt_path.is_file():
        raise SystemExit(f"serving.py: {args.ckpt_path}: no such checkpoint (make quickstart)")
    sentences = read_sentences(args.sentences)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args, port)
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}}
    try:
        results["startup_seconds"] = wait_ready(url, server)
        results["ceiling"], expected = ceiling(args, sentences)
        warm = scenario_requests(200, 1, len(sentences))
        asyncio.run(drive(url, 8, warm, sentences, expected, args.max_seconds))
        results["rss_mib_after_warmup"] = tree_rss_mib(server.pid)
        scenarios = [(c, 1) for c in args.concurrency]
        scenarios.append((args.batch_clients, args.batch_sentences))
        results["scenarios"] = []
        for clients, per_request in scenarios:
            plan = scenario_requests(args.requests, per_request, len(sentences))
            server_cpu, client_cpu = tree_cpu_seconds(server.pid), sum(os.times()[:2])
            found = asyncio.run(drive(url, clients, plan, sentences, expected, args.max_seconds))
            found["server_cpu_seconds"] = tree_cpu_seconds(server.pid) - server_cpu
            found["client_cpu_seconds"] = sum(os.times()[:2]) - client_cpu
            found["sentences_per_request"] = per_request
            found["ratio_to_ceiling"] = found["tokens_per_s"] / results["ceiling"]["tokens_per_s"]
            results["scenarios"].append(found)
        rng = random.Random(0)
        soak: list[bytes | list[int]] = [
            rng.choice(MALFORMED) if rng.random() < args.malformed else [n % len(sentences)]
            for n in range(args.soak_requests)
        ]
        results["soak"] = asyncio.run(
            drive(url, args.soak_concurrency, soak, sentences, expected, args.soak_max_seconds)
        )
        results["soak"]["malformed_sent"] = sum(isinstance(item, bytes) for item in soak)
        results["rss_mib_at_end"] = tree_rss_mib(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        results["exit_status_after_sigterm"] = server.wait(timeout=120)
    results["machine"] = {
        "cpus": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }
    results["targets"] = targets(results)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_table(results)


def targets(results: dict[str, Any]) -> dict[str, Any]:
    by = {(s["clients"], s["sentences_per_request"]): s for s in results["scenarios"]}
    at_64, at_8 = by.get((64, 1)), by.get((8, 1))
    soak = results["soak"]
    growth = results["rss_mib_at_end"] / results["rss_mib_after_warmup"] - 1
    return {
        "throughput_64_clients_vs_ceiling": at_64 and at_64["ratio_to_ceiling"],
        "throughput_target_met": bool(at_64 and at_64["ratio_to_ceiling"] >= 0.7),
        "p99_ms_8_clients": at_8 and at_8["p99_ms"],
        "p99_target_met": bool(at_8 and at_8["p99_ms"] <= 150),
        "answers_identical": all(
            s["sentences_not_identical"] == 0 for s in [*results["scenarios"], soak]
        ),
        "tags_and_spans_identical": all(
            s["sentences_with_other_tags"] == 0 for s in [*results["scenarios"], soak]
        ),
        "soak_5xx": soak["statuses"].get("5xx", 0),
        "soak_lost": soak["lost"],
        "soak_memory_growth": growth,
        "soak_targets_met": soak["statuses"].get("5xx", 0) == 0
        and soak["lost"] == 0
        and soak["sentences_with_other_tags"] == 0
        and growth <= 0.10,
    }


def print_table(results: dict[str, Any]) -> None:
    rate, threads = results["ceiling"]["tokens_per_s"], results["ceiling"]["torch_threads"]
    print(f"tag() ceiling: {rate:,.0f} tokens/s ({threads} threads)")
    print(
        "clients  sent/req  requests  tokens/s  x ceiling  p50 ms  p95 ms  p99 ms  batch  inexact"
    )
    for s in results["scenarios"]:
        print(
            f"{s['clients']:>7}  {s['sentences_per_request']:>8}  {s['requests']:>8}  "
            f"{s['tokens_per_s']:>8,.0f}  {s['ratio_to_ceiling']:>9.2f}  {s['p50_ms']:>6.1f}  "
            f"{s['p95_ms']:>6.1f}  {s['p99_ms']:>6.1f}  {s['batch_requests_mean']:>5.1f}  "
            f"{s['sentences_not_identical']:>7}"
        )
    soak = results["soak"]
    print(
        f"soak: {soak['requests']} requests ({soak['malformed_sent']} malformed), statuses "
        f"{soak['statuses']}, lost {soak['lost']}, other tags {soak['sentences_with_other_tags']}; "
        "memory "
        f"{results['rss_mib_after_warmup']:.0f} -> {results['rss_mib_at_end']:.0f} MiB; "
        f"exit status after SIGTERM {results['exit_status_after_sigterm']}"
    )
    print("targets:", json.dumps(results["targets"]))


if __name__ == "__main__":
    main()
