"""Load benchmark: start gunicorn on localhost with a model, drive it with single-word greedy requests
at 1, 16 and 64 concurrent keep-alive connections for a fixed time each, and print req/s, latency
percentiles, errors and the workers' memory before and after.

    python benchmarks/load.py --model models/default/model.pt --duration 60
    python benchmarks/load.py --model runs/tatoeba-koen/best.pt --inputs varied --cache-size 0   # uncached

The server is started exactly as `translator serve` starts it (gunicorn with service/gunicorn_conf.py);
--worker-class, --workers, --threads, --cache-size, --no-batching and --mkldnn vary it for comparisons.
Its JSON log (one line per request, as in production) goes to $TMPDIR/load-gunicorn-PID.log. The client is one asyncio
loop speaking minimal HTTP/1.1, so that it costs the 2-core machine as little CPU as possible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from itertools import cycle
from pathlib import Path
from typing import Iterator, Optional

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "default" / "model.pt"
REQUEST_TIMEOUT = 10.0  # seconds; a slower answer counts as an error


# --- the server ----------------------------------------------------------------------------------------
class Gunicorn:
    def __init__(self, model: Path, workers: int, threads: int, worker_class: str, cache_size: int, batching: bool,
                 mkldnn: bool, log: Path, quantize: str = "int8"):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [sys.executable, "-m", "gunicorn", "--config", "python:service.gunicorn_conf",
                   "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers), "--threads", str(threads),
                   "--worker-class", worker_class, "service.wsgi:app"]
        environment = dict(os.environ, TRANSLATOR_MODEL=str(model), TRANSLATOR_CACHE_SIZE=str(cache_size),
                           TRANSLATOR_BATCHING=str(int(batching)), TRANSLATOR_MKLDNN=str(int(mkldnn)),
                           TRANSLATOR_QUANTIZE=quantize)
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.log = open(log, "wb")  # noqa: SIM115 - the server writes its JSON log here until stop()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=environment)
        self.wait_until_ready(workers)

    def wait_until_ready(self, workers: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"gunicorn exited with code {self.process.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as response:
                    if response.status == 200 and len(self.worker_pids()) == workers:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"gunicorn was not ready after {timeout:.0f} s; see {self.log.name}")

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def worker_rss_mb(self) -> list[float]:
        sizes = []
        for pid in self.worker_pids():
            match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
            sizes.append(round(int(match.group(1)) / 1024, 1) if match else float("nan"))
        return sizes

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


# --- the client ----------------------------------------------------------------------------------------
@dataclass
class LevelResult:
    connections: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    def summary(self) -> dict:
        return {
            "connections": self.connections,
            "requests": len(self.latencies),
            "req_per_s": round(len(self.latencies) / self.seconds, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p95_ms": round(self.percentile(95), 2),
            "p99_ms": round(self.percentile(99), 2),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 2) if self.latencies else float("nan"),
            "errors": self.errors,
        }


def request_bytes(word: str) -> bytes:
    body = json.dumps({"text": word, "source": "en", "target": "ko", "beam": 1}).encode()
    return (b"POST /v1/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, server closes the connection) of one HTTP/1.1 response with a Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:] if line)}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() == "close"


async def connection_loop(port: int, requests: Iterator[bytes], start: float, stop: float, result: LevelResult) -> None:
    """One keep-alive connection sending requests back to back; only requests started in [start, stop) count."""
    reader: Optional[asyncio.StreamReader] = None
    writer: Optional[asyncio.StreamWriter] = None
    while (now := time.perf_counter()) < stop:
        counted = now >= start
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(next(requests))
            status, closing = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError):
            if counted:
                result.errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        if counted:
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.latencies.append(time.perf_counter() - now)
            else:
                result.errors += 1
        if closing:  # sync workers close after every response
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def run_level(port: int, words: list[str], connections: int, warmup: float, duration: float) -> LevelResult:
    start = time.perf_counter() + warmup
    result = LevelResult(connections, duration)
    requests = cycle([request_bytes(word) for word in words])  # shared: every connection takes the next word
    await asyncio.gather(*(connection_loop(port, requests, start, start + duration, result) for _ in range(connections)))
    return result


# --- inputs ------------------------------------------------------------------------------------------
def single_words(model: Path, count: int) -> list[str]:
    """Distinct English words from the model's own vocabulary (pieces that start a word)."""
    from translator.prediction import Translator

    tokenizer = Translator.load(model).tokenizer
    pieces = (tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size))
    words = sorted({piece[1:] for piece in pieces if re.fullmatch("▁[a-z]{3,}", piece)})
    return words[:count]


# --- main ----------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--connections", default="1,16,64", help="comma-separated levels (default: 1,16,64)")
    parser.add_argument("--duration", type=float, default=60, help="measured seconds per level (default: 60)")
    parser.add_argument("--warmup", type=float, default=3, help="unmeasured seconds before each level")
    parser.add_argument("--inputs", choices=("same", "varied"), default="same",
                        help="same: one word again and again; varied: cycle through distinct vocabulary words")
    parser.add_argument("--cache-size", type=int, default=2048, help="translation cache per worker (0 = off)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--no-batching", action="store_true", help="decode every request on its own")
    parser.add_argument("--mkldnn", action="store_true", help="keep oneDNN (mkldnn) kernels on in the workers")
    parser.add_argument("--worker-class", default="gthread", choices=("gthread", "sync"))
    parser.add_argument("--quantize", choices=("int8", "none"), default="int8",
                        help="int8 (the service default) or none (float32)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    if not args.model.is_file():
        raise SystemExit(f"{args.model}: no such model (pass --model PATH)")

    words = ["water"] if args.inputs == "same" else single_words(args.model, 5000)
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"load-gunicorn-{os.getpid()}.log"
    print(f"model {args.model}  workers {args.workers} × {args.worker_class} threads {args.threads}  "
          f"quantize {args.quantize}  cache {args.cache_size}  batching {'off' if args.no_batching else 'on'}  mkldnn {'on' if args.mkldnn else 'off'}  "
          f"inputs {args.inputs} ({len(words)} words)  {args.duration:.0f} s per level  "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    server = Gunicorn(args.model, args.workers, args.threads, args.worker_class, args.cache_size,
                      not args.no_batching, args.mkldnn, log, args.quantize)
    try:
        # The first requests allocate kernels and buffers once; memory is compared from after that.
        asyncio.run(run_level(server.port, words, 16, 0, args.warmup))
        rss_before = server.worker_rss_mb()
        summaries = []
        print(f"{'conns':>5} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}  worker RSS MB")
        for connections in (int(level) for level in args.connections.split(",")):
            summary = asyncio.run(run_level(server.port, words, connections, args.warmup, args.duration)).summary()
            summary["worker_rss_mb"] = server.worker_rss_mb()
            summaries.append(summary)
            print(f"{connections:>5} {summary['requests']:>8} {summary['req_per_s']:>8} {summary['p50_ms']:>8} "
                  f"{summary['p95_ms']:>8} {summary['p99_ms']:>8} {summary['errors']:>6}  {summary['worker_rss_mb']}", flush=True)
        print(f"worker RSS MB after warm-up {rss_before} → at the end {server.worker_rss_mb()}; "
              f"load average {os.getloadavg()[0]:.2f}")
    finally:
        server.stop()
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rss_before_mb": rss_before,
                                         "levels": summaries}, indent=2))


if __name__ == "__main__":
    main()
