"""Ours against Joey NMT 2.3.0 on the same data, model size and machine, in one run.

    benchmarks/peer/install.sh           # once: Joey NMT 2.3.0 in its own virtualenv ($PEER_VENV, default ../peer-venv)
    python benchmarks/run.py             # full: 10 minutes of training per system, ~50 min; writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick     # < 3 minutes on an idle 2-core machine (CI smoke); writes nothing tracked

Both systems train the model of configs/benchmark-koen.yaml (ko→en, SentencePiece joint unigram
vocabulary of the same size, embeddings 256, 2-layer BiLSTM encoder 256, 2-layer LSTM decoder 256,
Bahdanau attention with input feeding, dropout 0.3, Adam 1e-3, ~64 sentences per step, label
smoothing 0.1, clipping 1.0) on ../shared/data/tatoeba, back to back, each measured command in its
own process (peak RSS from that process's rusage):

1. training throughput: target tokens/s over a fixed number of steps after warm-up steps;
2. dev BLEU/chrF after the same wall-clock training budget (the best checkpoint, greedy);
3. translating the test set (the Tatoeba dev split: there is no separate test split) with beam 5
   and greedy, timed as the whole command, model loading included, scored by one sacrebleu call;
4. single-sentence latency p50/p95, greedy and beam 5, the model loaded once, the same inputs;
5. peak RSS of training and translating; our training GFLOP/s next to measured matmul speed at the
   same shapes; the shipped default model's phrase latency and our int8 option.

It prints one table (metric | ours | Joey | ratio | target | met?), writes every raw figure to
WORK/results.json and (full mode) a "Side by side with Joey NMT" section into benchmarks/RESULTS.md.
Exit codes: 0 measured (targets may be missed), 1 a measurement failed, 2 setup problem (e.g. Joey
not installed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import suite  # noqa: E402
from benchmarks.suite import Row  # noqa: E402

PEER_DIR = ROOT / "benchmarks" / "peer"
DEFAULT_PEER_VENV = Path(os.environ.get("PEER_VENV") or ROOT.parent / "peer-venv")
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tatoeba"
DEFAULT_GLOSSARY = ROOT.parent / "shared" / "data" / "glossary" / "ezcorean-6000.tsv"
DEFAULT_CONFIG = ROOT / "configs" / "benchmark-koen.yaml"
DEFAULT_MODEL = ROOT / "models" / "default" / "model.pt"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
JOEY_BATCH = 64  # sentences per step (the peer config)
NEVER = 10**7  # "no validation / no periodic save" in step counts


class SetupError(Exception):
    """Something to install or fix before the benchmark can run (exit code 2)."""


class MeasurementError(Exception):
    """A measured command failed (exit code 1)."""


@dataclass
class Budget:
    minutes: float  # wall-clock training budget per system (dev BLEU measurement)
    steps: int  # timed training steps (throughput measurement)
    warmup_steps: int  # untimed steps before them; also the logging window
    validate_every: int  # Joey steps between validations (ours: the same number of sentences)
    test_sentences: Optional[int]  # None = the whole dev split
    latency_inputs: int
    gemm_seconds: float  # time per shape for the matmul speed measurement


FULL = Budget(minutes=10, steps=200, warmup_steps=20, validate_every=100, test_sentences=None, latency_inputs=200, gemm_seconds=0.5)
QUICK = Budget(minutes=0.25, steps=10, warmup_steps=5, validate_every=10, test_sentences=50, latency_inputs=20, gemm_seconds=0.05)
# Our model's variants: (model.input_feeding, training.precision). bf16 mixed precision where the CPU
# has bf16 instructions (run.py falls back to float32 elsewhere); "feed-fp32" shows what bf16 adds.
VARIANTS = {"feed": (True, "bfloat16"), "no-feed": (False, "bfloat16"), "feed-fp32": (True, "float32")}
VARIANT_LABELS = {"feed": "with input feeding", "no-feed": "without input feeding", "feed-fp32": "with input feeding, float32 training"}


def training_precision(variant: str) -> str:
    from translator.training import cpu_has_bf16

    wanted = VARIANTS[variant][1]
    return wanted if wanted == "float32" or cpu_has_bf16() else "float32"


# --- progress and processes ----------------------------------------------------------------------------
_STARTED = time.monotonic()
_CHILDREN: dict[int, subprocess.Popen] = {}


def say(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float
    returncode: int
    log: Path


def run_measured(command: list[str], log: Path, *, stdin: Optional[Path] = None, stdout: Optional[Path] = None,
                 env: Optional[dict[str, str]] = None, timeout: Optional[float] = None,
                 watch: Optional[Callable[[subprocess.Popen], None]] = None, check: bool = True,
                 timeout_default: float = 3 * 3600) -> Measured:
    """Run one command in its own process; wall time from start to exit and that process's peak RSS
    (os.wait4's ru_maxrss). stderr (and stdout unless redirected) go to `log`. `watch` is called
    about 20 times a second while it runs (e.g. to stop it at a time budget)."""
    timeout = timeout_default if timeout is None else timeout
    log.parent.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    with open(log, "wb") as log_file, open(stdin or os.devnull, "rb") as input_file, \
            (open(stdout, "wb") if stdout else open(os.devnull, "wb")) as output_file:
        log_file.write(("$ " + shlex.join(command) + "\n").encode())
        log_file.flush()
        started = time.perf_counter()
        process = subprocess.Popen(command, stdin=input_file, stdout=output_file if stdout else log_file,
                                   stderr=log_file, env=environment, cwd=ROOT)
        _CHILDREN[process.pid] = process
        reaped = False
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    reaped = True
                    break
                if time.perf_counter() - started > timeout:
                    raise MeasurementError(f"{command[0]} … timed out after {timeout:.0f} s; see {log}")
                if watch is not None:
                    watch(process)
                time.sleep(0.02)
        finally:
            if not reaped:  # timeout, Ctrl-C or an error in `watch`: never leave the child running
                stop_children()
            _CHILDREN.pop(process.pid, None)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    measured = Measured(seconds, usage.ru_maxrss / 1024, process.returncode, log)
    if check and process.returncode != 0:
        raise MeasurementError(f"command failed with exit code {process.returncode}: {shlex.join(command)}\n"
                               f"--- last lines of {log} ---\n{tail(log)}")
    return measured


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_children() -> None:
    for pid, process in list(_CHILDREN.items()):
        try:
            process.kill()
            os.wait4(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    _CHILDREN.clear()


# --- setup --------------------------------------------------------------------------------------------------
def peer_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    install = f"PEER_VENV={venv} benchmarks/peer/install.sh" if venv != DEFAULT_PEER_VENV else "benchmarks/peer/install.sh"
    if not python.is_file():
        raise SetupError(f"Joey NMT is not installed: no {python}. Install it with: {install}")
    probe = subprocess.run([str(python), "-c", "import importlib.metadata as m, joeynmt.training, joeynmt.hub_interface; "
                            "print(m.version('joeynmt'), m.version('torch'), m.version('sentencepiece'))"],
                           capture_output=True, text=True, cwd=ROOT)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        raise SetupError(f"Joey NMT in {venv} does not import ({last}). Reinstall it with: {install}")
    versions = probe.stdout.split()
    if versions[0] != "2.3.0":
        raise SetupError(f"{venv} has Joey NMT {versions[0]}, the benchmark needs 2.3.0: {install}")
    return python


def machine() -> suite.Machine:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, env=dict(os.environ, LC_ALL="C")).stdout
        model, cpus, threads = suite.parse_lscpu(text)
    except (OSError, subprocess.CalledProcessError):
        model, cpus, threads = platform.processor() or "unknown CPU", os.cpu_count() or 0, 1
    memory = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return suite.Machine(model, cpus, threads, round(memory, 1))


def load_average() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_yaml(data: dict[str, Any], path: Path) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def our_vocabulary_size(config: dict[str, Any]) -> int:
    """The size our tokenizer reaches on this data (its vocab_size is a soft limit)."""
    from translator.config import config_from_dict
    from translator.tokenizer import Tokenizer
    from translator.training import load_examples

    checked = config_from_dict(config)
    train, _ = load_examples(checked.data, checked.training.seed)
    texts = [text for e in train for text in (e.src, e.tgt, e.context) if text]
    return Tokenizer.train(texts, checked.tokenizer, seed=checked.training.seed).vocab_size


# --- our side -----------------------------------------------------------------------------------------------
def ours_config(base: dict[str, Any], variant: str, dev_tsv: Path, **training: Any) -> dict[str, Any]:
    config = json.loads(json.dumps(base))
    config["name"] = f"benchmark-koen-{variant}"
    config["model"]["input_feeding"] = VARIANTS[variant][0]
    config["training"]["precision"] = training_precision(variant)
    config["data"]["dev"] = {"path": str(dev_tsv), "format": "tsv"}
    config["training"].update(training)
    from translator.config import config_from_dict

    config_from_dict(config)  # a typo here should fail now, not after minutes of training
    return config


def train_ours(name: str, config: dict[str, Any], work: Path) -> tuple[Path, Measured]:
    run_dir = work / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    config_path = write_yaml(config, work / "configs" / f"{name}.yaml")
    measured = run_measured([sys.executable, "-m", "translator", "train", "--config", str(config_path), "--output", str(run_dir)],
                            work / "logs" / f"{name}.log")
    return run_dir, measured


def our_windows(run_dir: Path) -> list[suite.Window]:
    windows = []
    for line in read_lines(run_dir / "metrics.jsonl"):
        entry = json.loads(line)
        if entry.get("kind") == "train":
            windows.append(suite.Window(entry["time"], entry["step"], entry["tokens_per_sec"]))
    return windows


def our_batches(run_dir: Path, first_step: int, last_step: int) -> tuple[list[dict[str, int]], float]:
    """The exact batches of steps first..last of a run (the data order is a pure function of seed and
    epoch) and the mean sentences per step over a whole epoch."""
    from translator.checkpoint import load_checkpoint
    from translator.config import config_from_dict
    from translator.data import make_batches
    from translator.tokenizer import Tokenizer
    from translator.training import encode_examples, load_examples

    payload = load_checkpoint(run_dir / "last.pt")
    config = config_from_dict(payload["config"])
    tokenizer = Tokenizer.from_proto(payload["tokenizer"])
    t = config.training
    train, _ = load_examples(config.data, t.seed)
    lengths = encode_examples(train, tokenizer, config.data.max_tokens, config.data.context_encoding).lengths
    batches, step, epoch, per_epoch = [], 0, 0, None
    while step < last_step:
        epoch_batches = make_batches(lengths, t.batch_tokens, t.seed, epoch)
        if per_epoch is None:
            per_epoch = statistics.mean(len(b) for b in epoch_batches)
        for indices in epoch_batches:
            step += 1
            if step >= first_step:
                src = [lengths[i][0] for i in indices]
                tgt = [lengths[i][1] for i in indices]
                batches.append({"batch": len(indices), "src_len": max(src), "tgt_len": max(tgt),
                                "src_tokens": sum(src), "tgt_tokens": sum(tgt)})
            if step >= last_step:
                break
        epoch += 1
    return batches, float(per_epoch or 0.0)


def best_dev_entry(run_dir: Path) -> Optional[dict[str, Any]]:
    """The scheduled validation with the best BLEU (the one best.pt holds)."""
    entries = [json.loads(line) for line in read_lines(run_dir / "metrics.jsonl")]
    dev = [e for e in entries if e.get("kind") == "dev" and not e.get("final")]
    return max(dev, key=lambda e: (e["bleu"], -e["step"])) if dev else None


# --- Joey's side ----------------------------------------------------------------------------------------
def joey_config(base: dict[str, Any], data_dir: Path, model_dir: Path, **options: Any) -> dict[str, Any]:
    from benchmarks.peer.prepare import joey_config as convert

    return convert(base, data_dir, model_dir, **options)


def joey_dev(config: dict[str, Any], prefix: Path) -> dict[str, Any]:
    config["data"]["dev"] = prefix.as_posix()
    return config


def train_joey(name: str, python: Path, config: dict[str, Any], work: Path, minutes: Optional[float] = None) -> tuple[Path, Measured, dict[str, Any]]:
    """Train Joey; with `minutes`, stop it with SIGINT (Joey saves and exits cleanly) that long after
    its training loop started (its 'EPOCH 1' line), as our max_minutes counts from our loop's start."""
    model_dir = Path(config["model_dir"])
    shutil.rmtree(model_dir, ignore_errors=True)
    config_path = write_yaml(config, work / "configs" / f"{name}.yaml")
    state: dict[str, Any] = {"started": None, "stopped": None, "last_check": 0.0}

    def watch(process: subprocess.Popen) -> None:
        if minutes is None or state["stopped"] is not None or time.monotonic() - state["last_check"] < 0.25:
            return
        state["last_check"] = time.monotonic()
        if state["started"] is None:
            log = model_dir / "train.log"
            if log.is_file():
                state["started"] = suite.joey_training_started(log.read_text(encoding="utf-8", errors="replace"))
        elif time.time() >= state["started"] + minutes * 60:
            process.send_signal(signal.SIGINT)
            state["stopped"] = time.time()

    timeout = None if minutes is None else minutes * 60 + 900
    measured = run_measured([str(python), "-m", "joeynmt", "train", str(config_path), "--skip-test"],
                            work / "logs" / f"{name}.log", watch=watch, timeout=timeout)
    return model_dir, measured, state


# --- inference --------------------------------------------------------------------------------------------------
@dataclass
class Translation:
    system: str
    beam: int
    seconds: float
    sentences: int
    sentences_per_sec: float
    peak_rss_mb: float
    bleu: float
    chrf: float
    mkldnn: str = ""
    quantize: str = ""


def score(hyp: Path, references: list[str]) -> tuple[float, float]:
    from translator.evaluation import score_corpus

    hypotheses = read_lines(hyp)
    if len(hypotheses) != len(references):
        raise MeasurementError(f"{hyp}: {len(hypotheses)} translations for {len(references)} inputs")
    scores = score_corpus(hypotheses, references)
    return scores.bleu, scores.chrf


def translate_ours(model: Path, beam: int, source: Path, references: list[str], work: Path, tag: str,
                   mkldnn: str, quantize: str = "") -> Translation:
    name = f"translate-{tag}-beam{beam}-mkldnn-{mkldnn}{'-' + quantize if quantize else ''}"
    hyp = work / "hyp" / f"{name}.txt"
    hyp.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(ROOT / "benchmarks" / "ours_driver.py"), "translate", "--mkldnn", mkldnn, "--",
               "--model", str(model), "--source", "ko", "--target", "en", "--beam", str(beam), "--batch-size", "64"]
    if quantize:
        command += ["--quantize", quantize]
    measured = run_measured(command, work / "logs" / f"{name}.log", stdin=source, stdout=hyp)
    bleu, chrf = score(hyp, references)
    return Translation("ours", beam, measured.seconds, len(references), len(references) / measured.seconds,
                       measured.peak_rss_mb, bleu, chrf, mkldnn, quantize)


def translate_joey(python: Path, config: dict[str, Any], beam: int, source: Path, references: list[str], work: Path) -> Translation:
    name = f"translate-joey-beam{beam}"
    config_path = write_yaml(config, work / "configs" / f"{name}.yaml")
    hyp = work / "hyp" / f"{name}.txt"
    hyp.parent.mkdir(parents=True, exist_ok=True)
    # `translate -o FILE` crashes in Joey 2.3.0: translations go to stdout instead.
    measured = run_measured([str(python), "-m", "joeynmt", "translate", str(config_path)], work / "logs" / f"{name}.log",
                            stdin=source, stdout=hyp)
    bleu, chrf = score(hyp, references)
    return Translation("joey", beam, measured.seconds, len(references), len(references) / measured.seconds,
                       measured.peak_rss_mb, bleu, chrf)


def latency(command: list[str], name: str, work: Path) -> dict[str, Any]:
    out = work / "latency" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    measured = run_measured(command, work / "logs" / f"latency-{name}.log", stdout=out)
    report = json.loads(out.read_text(encoding="utf-8"))
    report["peak_rss_mb"] = round(measured.peak_rss_mb, 1)
    report["seconds"] = round(measured.seconds, 2)
    for beam in report["beams"].values():
        values = beam["latencies_ms"]
        beam["p50_ms"] = round(suite.percentile(values, 50), 2)
        beam["p95_ms"] = round(suite.percentile(values, 95), 2)
        beam["mean_ms"] = round(statistics.mean(values), 2)
        beam["mean_output_words"] = round(statistics.mean(len(o.split()) for o in beam["outputs"]), 2)  # latency grows with it
    return report


def latency_ours(model: Path, inputs: Path, source: str, target: str, mkldnn: str, threads: int, work: Path, name: str,
                 quantize: str = "") -> dict[str, Any]:
    command = [sys.executable, str(ROOT / "benchmarks" / "ours_driver.py"), "latency", "--mkldnn", mkldnn, "--threads", str(threads),
               "--model", str(model), "--source", source, "--target", target, "--inputs", str(inputs), "--beams", "1", "5"]
    if quantize:
        command += ["--quantize", quantize]
    return latency(command, name, work)


def glossary_phrases(path: Path, count: int) -> list[str]:
    """`count` short English glosses (1–3 words, the first sense) spread over the ezcorean glossary."""
    import re

    phrases, seen = [], set()
    for line in read_lines(path)[1:]:
        columns = line.split("\t")
        if len(columns) < 2:
            continue
        gloss = re.split(r"[,;(]", columns[1])[0].strip().lower()
        if gloss and re.fullmatch(r"[a-z]+(?: [a-z]+){0,2}", gloss) and gloss not in seen:
            seen.add(gloss)
            phrases.append(gloss)
    if len(phrases) < count:
        raise SetupError(f"{path}: only {len(phrases)} usable glosses, {count} wanted")
    return [phrases[round(i * (len(phrases) - 1) / max(count - 1, 1))] for i in range(count)]


def fastest_latency(reports: list[dict[str, Any]], beam: str) -> dict[str, Any]:
    """The setting (threads, oneDNN) with the lowest p50 at this beam."""
    return min(reports, key=lambda r: r["beams"][beam]["p50_ms"])


def setting(report: dict[str, Any]) -> str:
    threads = report.get("threads")
    parts = [f"{threads} thread{'s' if threads != 1 else ''}"] if threads else []
    if report.get("system") == "ours":
        parts.append(f"oneDNN {report['mkldnn']}")
    return ", ".join(parts)


# --- matmul speed ----------------------------------------------------------------------------------------------
def gemm_speeds(shapes: list[tuple[int, int, int, int]], seconds: float,
                precision: str = "float32") -> dict[tuple[int, int, int, int], float]:
    """GFLOP/s of torch.mm (torch.bmm when batched) at each (batch, m, k, n) shape on this machine
    (in `precision`, torch's default threads, the best of three timing rounds)."""
    import torch

    dtype = getattr(torch, precision)
    speeds = {}
    for bmm, m, k, n in shapes:
        if bmm > 1:
            a, b, op = torch.randn(bmm, m, k, dtype=dtype), torch.randn(bmm, k, n, dtype=dtype), torch.bmm
        else:
            a, b, op = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype), torch.mm
        for _ in range(3):
            op(a, b)
        best = 0.0
        for _ in range(3):
            reps, started = 0, time.perf_counter()
            while reps < 5 or time.perf_counter() - started < seconds / 3:
                op(a, b)
                reps += 1
            best = max(best, 2.0 * bmm * m * k * n * reps / (time.perf_counter() - started) / 1e9)
        speeds[(bmm, m, k, n)] = best
    return speeds


# --- the run -----------------------------------------------------------------------------------------------------
def measure(args: argparse.Namespace, budget: Budget) -> dict[str, Any]:
    import yaml

    from translator.io import atomic_write_text

    python = peer_python(args.peer_venv)
    data = args.data.resolve()
    for name in ("train.en-ko.tsv", "dev.en-ko.tsv"):
        if not (data / name).is_file():
            raise SetupError(f"{data / name} not found (pass --data DIR with train.en-ko.tsv and dev.en-ko.tsv)")
    if not args.config.is_file():
        raise SetupError(f"{args.config} not found")
    if args.default_model.is_file() and not args.glossary.is_file():
        raise SetupError(f"{args.glossary} not found (the phrase-latency inputs come from it; pass --glossary FILE)")
    work = args.work.resolve()
    for sub in ("runs", "logs", "hyp", "latency", "configs", "sets"):  # this script's own outputs only
        shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full", "budget": asdict(budget),
                               "date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
                               "command": "python benchmarks/run.py " + " ".join(args.argv), "machine": asdict(machine()),
                               "load_average_start": load_average(), "variant": args.variant, "work": str(work),
                               "precision": training_precision(args.variant),
                               "settings": {"mkldnn": ["off", "on"] if args.mkldnn == "both" else [args.mkldnn],
                                            "latency_threads": [str(t) if t else "default" for t in args.latency_threads]}}

    # Data, vocabulary, configs.
    base = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    base["data"]["train"] = {"path": str(data / "train.en-ko.tsv"), "format": "tsv"}
    base["data"]["dev"] = {"path": str(data / "dev.en-ko.tsv"), "format": "tsv"}
    say("ours: vocabulary size on this data")
    vocab = our_vocabulary_size(base)
    base["tokenizer"]["vocab_size"] = vocab
    say(f"peer: converting the data and training a joint vocabulary of {vocab} pieces")
    peer_data = work / "peer-data"
    run_measured([str(python), str(PEER_DIR / "prepare.py"), "--out", str(peer_data), "--data", str(data),
                  "--config", str(args.config), "--vocab-size", str(vocab)], work / "logs" / "prepare.log")
    prepared = json.loads((peer_data / "prepared.json").read_text(encoding="utf-8"))
    if prepared["vocab_size"] != vocab:
        raise MeasurementError(f"Joey's vocabulary has {prepared['vocab_size']} pieces, ours {vocab}: not comparable")
    results["data"] = {"train_pairs": prepared["train_pairs"], "dev_pairs": prepared["dev_pairs"], "vocab_size": vocab}
    # Ours reads the very pairs Joey trains on (already cleaned and without dev pairs; our reader's
    # cleaning leaves them as they are), so a dev subset in quick runs cannot change the training set.
    train_en, train_ko = read_lines(peer_data / "train.en"), read_lines(peer_data / "train.ko")
    train_tsv = write_lines(work / "sets" / "train.tsv", [f"{en}\t{ko}" for en, ko in zip(train_en, train_ko, strict=True)])
    base["data"]["train"] = {"path": str(train_tsv), "format": "tsv"}

    # Evaluation sets: the dev split (or its first N pairs in quick runs) as the test set; a tiny dev
    # set for the throughput runs, whose validation is not what they measure.
    dev_en, dev_ko = read_lines(peer_data / "dev.en"), read_lines(peer_data / "dev.ko")
    count = min(budget.test_sentences or len(dev_en), len(dev_en))
    sets = work / "sets"
    write_lines(sets / "test.en", dev_en[:count])
    write_lines(sets / "test.ko", dev_ko[:count])
    test_tsv = write_lines(sets / "test.tsv", [f"{en}\t{ko}" for en, ko in zip(dev_en[:count], dev_ko[:count], strict=True)])
    write_lines(sets / "tiny.en", dev_en[:8])
    write_lines(sets / "tiny.ko", dev_ko[:8])
    tiny_tsv = write_lines(sets / "tiny.tsv", [f"{en}\t{ko}" for en, ko in zip(dev_en[:8], dev_ko[:8], strict=True)])
    references = dev_en[:count]
    test_source = sets / "test.ko"
    latency_inputs = write_lines(sets / "latency.ko", [dev_ko[i % count] for i in range(budget.latency_inputs)])
    results["test_set"] = {"file": str(data / "dev.en-ko.tsv"), "sentences": count,
                           "note": "the Tatoeba dev split (there is no separate Tatoeba test split)"
                                   + ("" if count == len(dev_en) else f", its first {count} pairs")}

    variants = [args.variant] + ([v for v in VARIANTS if v != args.variant] if args.both_variants else [])
    window = budget.warmup_steps
    total_steps = budget.warmup_steps + budget.steps

    # 1. Training throughput over a fixed number of steps.
    results["throughput"] = {}
    for variant in variants:
        say(f"ours ({variant}): {total_steps} training steps for throughput ({budget.warmup_steps} warm-up)")
        config = ours_config(base, variant, tiny_tsv, max_steps=total_steps, max_minutes=0, log_every=window,
                             validate_every=NEVER, save_every=NEVER)
        run_dir, measured = train_ours(f"ours-{variant}-throughput", config, work)
        figures = suite.window_throughput(our_windows(run_dir))
        batches, per_epoch = our_batches(run_dir, figures["first_step"], figures["last_step"])
        dims = suite.Dims.from_config(config["model"], vocab)
        flops = sum(suite.training_step_flops(dims, b["batch"], b["src_len"], b["tgt_len"], b["src_tokens"]) for b in batches)
        tokens = sum(b["tgt_tokens"] for b in batches)
        results["throughput"][f"ours-{variant}"] = {
            **figures, "exact_tokens": tokens, "exact_tokens_per_sec": tokens / figures["seconds"],
            "sentences_per_step": statistics.mean(b["batch"] for b in batches), "sentences_per_step_epoch": per_epoch,
            "gflops": flops / figures["seconds"] / 1e9, "flops_per_step": flops / len(batches),
            "mean_batch": {key: statistics.mean(b[key] for b in batches) for key in batches[0]},
            "peak_rss_mb": measured.peak_rss_mb, "process_seconds": measured.seconds}
        say(f"ours ({variant}): {figures['tokens_per_sec']:,.0f} target tokens/s, {figures['seconds_per_step']:.3f} s/step")
    say(f"joey: {total_steps} training steps for throughput")
    config = joey_dev(joey_config(base, peer_data, work / "runs" / "joey-throughput", steps=total_steps, logging_freq=window,
                                  validation_freq=window * (total_steps // window + 2)), sets / "tiny")
    model_dir, measured, _ = train_joey("joey-throughput", python, config, work)
    figures = suite.window_throughput(suite.joey_windows((model_dir / "train.log").read_text(encoding="utf-8")))
    results["throughput"]["joey"] = {**figures, "sentences_per_step": JOEY_BATCH,
                                     "sentences_per_step_epoch": prepared["train_pairs"] / math.ceil(prepared["train_pairs"] / JOEY_BATCH),
                                     "peak_rss_mb": measured.peak_rss_mb, "process_seconds": measured.seconds}
    say(f"joey: {figures['tokens_per_sec']:,.0f} target tokens/s, {figures['seconds_per_step']:.3f} s/step")

    # 2. Dev BLEU after the same wall-clock budget: validations every `validate_every` Joey steps,
    # ours every same number of training sentences.
    results["budget_runs"] = {}
    models: dict[str, Path] = {}
    for variant in variants:
        per_step = results["throughput"][f"ours-{variant}"]["sentences_per_step_epoch"]
        every = max(1, round(budget.validate_every * JOEY_BATCH / per_step))
        say(f"ours ({variant}): training for {budget.minutes:g} min, validating every {every} steps")
        config = ours_config(base, variant, test_tsv, max_steps=NEVER, max_minutes=budget.minutes, validate_every=every,
                             log_every=10, save_every=NEVER, max_epochs=NEVER)
        run_dir, measured = train_ours(f"ours-{variant}-budget", config, work)
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        best = best_dev_entry(run_dir)
        models[f"ours-{variant}"] = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
        results["budget_runs"][f"ours-{variant}"] = {
            "steps": summary["steps"], "minutes": summary["minutes"], "stop_reason": summary["stop_reason"],
            "validate_every": every, "best_step": best["step"] if best else None,
            "best_validation_bleu": best["bleu"] if best else None, "checkpoint": str(models[f"ours-{variant}"]),
            "peak_rss_mb": measured.peak_rss_mb, "process_seconds": measured.seconds}
        say(f"ours ({variant}): {summary['steps']} steps; best validation BLEU {best['bleu'] if best else '—'}")
    say(f"joey: training for {budget.minutes:g} min, validating every {budget.validate_every} steps")
    logging_freq = math.gcd(budget.validate_every, 10)
    config = joey_dev(joey_config(base, peer_data, work / "runs" / "joey-budget", logging_freq=logging_freq,
                                  validation_freq=budget.validate_every), sets / "test")
    model_dir, measured, state = train_joey("joey-budget", python, config, work, minutes=budget.minutes)
    if state["stopped"] is None:
        raise MeasurementError(f"Joey stopped before its {budget.minutes} min budget; see {work / 'logs' / 'joey-budget.log'}")
    validations = suite.joey_validations((model_dir / "validations.txt").read_text(encoding="utf-8")) \
        if (model_dir / "validations.txt").is_file() else []
    joey_steps = suite.joey_interrupted_at((model_dir / "train.log").read_text(encoding="utf-8"))
    best_joey = max(validations, key=lambda v: (v[1], -v[0])) if validations else None
    models["joey"] = model_dir / "best.ckpt" if (model_dir / "best.ckpt").is_file() else model_dir / "latest.ckpt"
    results["budget_runs"]["joey"] = {
        "steps": joey_steps, "minutes": round((state["stopped"] - state["started"]) / 60, 2),
        "validate_every": budget.validate_every, "best_step": best_joey[0] if best_joey else None,
        "best_validation_bleu": best_joey[1] if best_joey else None, "checkpoint": str(models["joey"]),
        "peak_rss_mb": measured.peak_rss_mb, "process_seconds": measured.seconds}
    say(f"joey: {joey_steps} steps; best validation BLEU {best_joey[1] if best_joey else '—'}")

    # 3. The test set, whole command: greedy (= dev BLEU after the budget) and beam 5.
    mkldnn_modes = ["off", "on"] if args.mkldnn == "both" else [args.mkldnn]
    results["translation"] = {}
    for variant in variants:
        rows = []
        for beam in (1, 5):
            for mode in mkldnn_modes if variant == args.variant else [mkldnn_modes[0]]:
                say(f"ours ({variant}): translating {count} test sentences, beam {beam}, oneDNN {mode}")
                rows.append(translate_ours(models[f"ours-{variant}"], beam, test_source, references, work, f"ours-{variant}", mode))
        results["translation"][f"ours-{variant}"] = [asdict(r) for r in rows]
    for beam in (1, 5):
        say(f"ours ({args.variant}, int8): translating {count} test sentences, beam {beam}")
        results["translation"].setdefault(f"ours-{args.variant}-int8", []).append(asdict(
            translate_ours(models[f"ours-{args.variant}"], beam, test_source, references, work, f"ours-{args.variant}", "off", "int8")))
    results["translation"]["joey"] = []
    for beam in (1, 5):
        say(f"joey: translating {count} test sentences, beam {beam}")
        config = joey_config(base, peer_data, models["joey"].parent, beam=beam, load_model=models["joey"])
        results["translation"]["joey"].append(asdict(translate_joey(python, config, beam, test_source, references, work)))

    # 4. Single-sentence latency: the same inputs, model loaded once, per torch thread setting (both
    # systems) and oneDNN setting (ours); the table shows each system's fastest setting.
    results["latency"] = {"ours": [], "ours-int8": [], "joey": [], "default": [], "default-int8": []}
    primary = models[f"ours-{args.variant}"]
    joey_latency_config = write_yaml(joey_config(base, peer_data, models["joey"].parent, load_model=models["joey"]),
                                     work / "configs" / "latency-joey.yaml")
    phrases = None
    if args.default_model.is_file():
        phrases = write_lines(sets / "phrases.en", glossary_phrases(args.glossary, budget.latency_inputs))
    else:
        say(f"no {args.default_model}: skipping the default model's phrase latency")
    for threads in args.latency_threads:
        label = f"{threads or 'default'} thread{'s' if threads != 1 else ''}"
        for mode in mkldnn_modes:
            say(f"ours: {budget.latency_inputs} single sentences, greedy and beam 5, oneDNN {mode}, {label}")
            results["latency"]["ours"].append(latency_ours(primary, latency_inputs, "ko", "en", mode, threads, work,
                                                           f"ours-mkldnn-{mode}-threads-{threads}"))
        say(f"ours (int8): {budget.latency_inputs} single sentences, {label}")
        results["latency"]["ours-int8"].append(latency_ours(primary, latency_inputs, "ko", "en", "off", threads, work,
                                                            f"ours-int8-threads-{threads}", "int8"))
        say(f"joey: {budget.latency_inputs} single sentences, greedy and beam 5, {label}")
        results["latency"]["joey"].append(latency(
            [str(python), str(PEER_DIR / "joey_driver.py"), "--config", str(joey_latency_config), "--inputs", str(latency_inputs),
             "--beams", "1", "5", "--threads", str(threads)], f"joey-threads-{threads}", work))
        if phrases is not None:
            for mode in mkldnn_modes:
                say(f"default model: {budget.latency_inputs} single phrases en→ko, oneDNN {mode}, {label}")
                results["latency"]["default"].append(latency_ours(args.default_model, phrases, "en", "ko", mode, threads, work,
                                                                  f"default-mkldnn-{mode}-threads-{threads}"))
            say(f"default model (int8): {budget.latency_inputs} single phrases en→ko, {label}")
            results["latency"]["default-int8"].append(latency_ours(args.default_model, phrases, "en", "ko", "off", threads, work,
                                                                   f"default-int8-threads-{threads}", "int8"))

    # 5. Matmul speed at our training shapes.
    say("matmul speed at the shapes of our training step")
    key = f"ours-{args.variant}"
    mean = results["throughput"][key]["mean_batch"]
    dims = suite.Dims.from_config(ours_config(base, args.variant, tiny_tsv)["model"], vocab)
    gemms = suite.forward_gemms(dims, round(mean["batch"]), round(mean["src_len"]), round(mean["tgt_len"]), round(mean["src_tokens"]))
    precision = results["precision"]
    speeds = gemm_speeds(sorted({g.shape for g in gemms}), budget.gemm_seconds, precision)
    total = sum(g.flops for g in gemms)
    results["matmul"] = {"precision": precision,
        "shapes": [{"name": g.name, "bmm": g.bmm, "m": g.m, "k": g.k, "n": g.n, "count": round(g.count, 2),
                    "share_of_flops": round(g.flops / total, 4), "gflops": round(speeds[g.shape], 2)} for g in gemms],
        "peak_gflops": max(speeds.values()),
        "peak_shape": max(gemms, key=lambda g: speeds[g.shape]).name,
        # What the step's products would reach if each ran as one torch.mm/bmm of its shape.
        "mm_at_our_shapes_gflops": total / sum(g.flops / (speeds[g.shape] * 1e9) for g in gemms) / 1e9,
    }
    results["load_average_end"] = load_average()
    atomic_write_text(work / "results.json", json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n")
    return results


# --- the report ----------------------------------------------------------------------------------------------
def fastest(rows: list[dict[str, Any]], beam: int) -> dict[str, Any]:
    candidates = [r for r in rows if r["beam"] == beam]
    return min(candidates, key=lambda r: r["seconds"])


def table_rows(results: dict[str, Any]) -> list[Row]:
    variant = results["variant"]
    ours_key = f"ours-{variant}"
    thr, runs, tr, lat = results["throughput"], results["budget_runs"], results["translation"], results["latency"]
    minutes = results["budget"]["minutes"]
    rows: list[Row] = []

    ours_tps, joey_tps = thr[ours_key]["tokens_per_sec"], thr["joey"]["tokens_per_sec"]
    rows.append(Row(f"training, target tokens/s over {thr['joey']['steps']} steps after {results['budget']['warmup_steps']} warm-up steps",
                    ours_tps, joey_tps, "higher", "≥ 3×",
                    suite.met_ratio(ours_tps, joey_tps, at_least=3.0), digits=0))
    rows.append(Row("training, sentences per step (mean over an epoch)", thr[ours_key]["sentences_per_step_epoch"],
                    thr["joey"]["sentences_per_step_epoch"], "info"))
    rows.append(Row("training, seconds per step", thr[ours_key]["seconds_per_step"], thr["joey"]["seconds_per_step"], "lower", digits=3))

    joey_greedy = fastest(tr["joey"], 1)
    ours_greedy = fastest(tr[ours_key], 1)  # oneDNN on or off gives the same translations
    unvalidated = [name for name, key in (("ours", ours_key), ("Joey", "joey")) if not runs[key]["best_step"]]
    which = f"; {' and '.join(unvalidated)}: last checkpoint, no validation in time" if unvalidated else ""
    rows.append(Row(f"dev BLEU, greedy, best checkpoint after {minutes:g} min", ours_greedy["bleu"], joey_greedy["bleu"],
                    "delta", "≥ Joey", ours_greedy["bleu"] >= joey_greedy["bleu"], digits=2,
                    note=f"{runs[ours_key]['steps'] or 0:,} vs {runs['joey']['steps'] or 0:,} steps{which}"))
    rows.append(Row(f"dev chrF, greedy, after {minutes:g} min", ours_greedy["chrf"], joey_greedy["chrf"], "delta", digits=2))

    ours_b5, joey_b5 = fastest(tr[ours_key], 5), fastest(tr["joey"], 5)
    ours_g, joey_g = fastest(tr[ours_key], 1), fastest(tr["joey"], 1)
    rows.append(Row("test set, beam 5, sentences/s (whole command)", ours_b5["sentences_per_sec"], joey_b5["sentences_per_sec"], "higher",
                    "≥ 3×", suite.met_ratio(ours_b5["sentences_per_sec"], joey_b5["sentences_per_sec"], at_least=3.0),
                    note=f"oneDNN {ours_b5['mkldnn']}"))
    rows.append(Row("test set, beam 5, BLEU", ours_b5["bleu"], joey_b5["bleu"], "delta", "≥ Joey", ours_b5["bleu"] >= joey_b5["bleu"], digits=2))
    rows.append(Row("test set, greedy, sentences/s (whole command)", ours_g["sentences_per_sec"], joey_g["sentences_per_sec"], "higher",
                    note=f"oneDNN {ours_g['mkldnn']}"))
    # The int8 option (dynamic quantization, what the service runs): the same targets, BLEU included.
    int8_b5 = fastest(tr[f"{ours_key}-int8"], 5)
    int8_met = (suite.met_ratio(int8_b5["sentences_per_sec"], joey_b5["sentences_per_sec"], at_least=3.0)
                and int8_b5["bleu"] >= joey_b5["bleu"])
    rows.append(Row("test set, beam 5, sentences/s, int8 (whole command)", int8_b5["sentences_per_sec"], joey_b5["sentences_per_sec"],
                    "higher", "≥ 3×, BLEU ≥ Joey", int8_met, note=f"BLEU {int8_b5['bleu']:.2f}"))

    for beam, label in (("1", "greedy"), ("5", "beam 5")):
        ours_best, joey_best = fastest_latency(lat["ours"], beam), fastest_latency(lat["joey"], beam)
        ours_p50, joey_p50 = ours_best["beams"][beam]["p50_ms"], joey_best["beams"][beam]["p50_ms"]
        rows.append(Row(f"single sentence, {label}, p50 ms", ours_p50, joey_p50, "lower", "≤ ⅓ (0.33×)",
                        suite.met_ratio(ours_p50, joey_p50, at_most=1 / 3), digits=2,
                        note=f"ours {setting(ours_best)}; Joey {setting(joey_best)}"))
        rows.append(Row(f"single sentence, {label}, p95 ms", ours_best["beams"][beam]["p95_ms"], joey_best["beams"][beam]["p95_ms"],
                        "lower", digits=2))
        int8 = fastest_latency(lat["ours-int8"], beam)
        int8_p50 = int8["beams"][beam]["p50_ms"]
        rows.append(Row(f"single sentence, {label}, p50 ms, int8", int8_p50, joey_p50, "lower", "≤ ⅓ (0.33×)",
                        suite.met_ratio(int8_p50, joey_p50, at_most=1 / 3), digits=2, note=f"ours {setting(int8)}"))

    ours_train_rss, joey_train_rss = runs[ours_key]["peak_rss_mb"], runs["joey"]["peak_rss_mb"]
    rows.append(Row("peak RSS, training, MB", ours_train_rss, joey_train_rss, "lower", "< Joey", ours_train_rss < joey_train_rss, digits=0))
    ours_serve = max(r["peak_rss_mb"] for r in tr[ours_key] if r["beam"] == 5)
    joey_serve = max(r["peak_rss_mb"] for r in tr["joey"] if r["beam"] == 5)
    rows.append(Row("peak RSS, translating the test set (beam 5), MB", ours_serve, joey_serve, "lower", "< Joey", ours_serve < joey_serve, digits=0))
    ours_single = max(r["peak_rss_mb"] for r in lat["ours"])
    joey_single = max(r["peak_rss_mb"] for r in lat["joey"])
    rows.append(Row("peak RSS, single-sentence process, MB", ours_single, joey_single, "lower", "< Joey", ours_single < joey_single, digits=0))

    if lat["default"]:
        for beam, label, limit in (("1", "greedy", 5.0), ("5", "beam 5", 15.0)):
            fp32, int8 = fastest_latency(lat["default"], beam), fastest_latency(lat["default-int8"], beam)
            fp32_p50, int8_p50 = fp32["beams"][beam]["p50_ms"], int8["beams"][beam]["p50_ms"]
            rows.append(Row(f"default model, single phrase, {label}, p50 ms, fp32", fp32_p50, None, "info", f"≤ {limit:g} ms",
                            fp32_p50 <= limit, digits=2, note=setting(fp32)))
            rows.append(Row(f"default model, single phrase, {label}, p50 ms, int8", int8_p50, None, "info", f"≤ {limit:g} ms",
                            int8_p50 <= limit, digits=2, note=setting(int8)))
            rows.append(Row(f"int8 speed-up, single phrase, {label} (fp32 p50 ÷ int8 p50)", fp32_p50 / int8_p50, None, "info", "≥ 1.5×",
                            fp32_p50 / int8_p50 >= 1.5, digits=2))
    for beam, label in (("1", "greedy"), ("5", "beam 5")):
        fp32, int8 = fastest_latency(lat["ours"], beam), fastest_latency(lat["ours-int8"], beam)
        speedup = fp32["beams"][beam]["p50_ms"] / int8["beams"][beam]["p50_ms"]
        rows.append(Row(f"int8 speed-up, single sentence, benchmark model, {label}", speedup, None, "info", "≥ 1.5×", speedup >= 1.5,
                        digits=2, note=f"int8 p50 {int8['beams'][beam]['p50_ms']:.2f} ms"))
    int8_rows = {r["beam"]: r for r in tr[f"ours-{variant}-int8"]}
    fp32_rows = {beam: fastest(tr[ours_key], beam) for beam in (1, 5)}
    for beam, label in ((5, "beam 5"), (1, "greedy")):
        loss = fp32_rows[beam]["bleu"] - int8_rows[beam]["bleu"]
        rows.append(Row(f"int8 BLEU loss on dev, {label} (fp32 − int8)", loss, None, "info", "≤ 0.5", loss <= 0.5, digits=2,
                        ours_text=f"{loss:.2f} ({fp32_rows[beam]['bleu']:.2f} → {int8_rows[beam]['bleu']:.2f})"))

    matmul = results["matmul"]
    gflops = thr[ours_key]["gflops"]
    rows.append(Row("our training GFLOP/s (analytic matmul FLOPs × 3 ÷ step time)", gflops, None, "info", digits=1,
                    note=f"{gflops / matmul['peak_gflops']:.0%} of the matmul peak below"))
    rows.append(Row(f"this machine's torch.mm peak at our training shapes, {matmul.get('precision', 'float32')}, GFLOP/s",
                    matmul["peak_gflops"], None, "info", digits=1,
                    note=f"{matmul['peak_shape']}; every product of our step as one mm/bmm: {matmul['mm_at_our_shapes_gflops']:.1f}"))

    for other in (k for k in thr if k.startswith("ours-") and k != ours_key):
        label = VARIANT_LABELS[other.removeprefix("ours-")]
        tps = thr[other]["tokens_per_sec"]
        rows.append(Row(f"ours {label}: training tokens/s", tps, joey_tps, "higher", "≥ 3×", suite.met_ratio(tps, joey_tps, at_least=3.0),
                        digits=0))
        rss = runs[other]["peak_rss_mb"]
        rows.append(Row(f"ours {label}: peak RSS, training, MB", rss, joey_train_rss, "lower", "< Joey", rss < joey_train_rss, digits=0))
        other_greedy = fastest(tr[other], 1)
        rows.append(Row(f"ours {label}: dev BLEU, greedy, after {minutes:g} min", other_greedy["bleu"], joey_greedy["bleu"], "delta",
                        "≥ Joey", other_greedy["bleu"] >= joey_greedy["bleu"], digits=2, note=f"{runs[other]['steps']:,} steps"))
        other_b5 = fastest(tr[other], 5)
        rows.append(Row(f"ours {label}: test set, beam 5, BLEU", other_b5["bleu"], joey_b5["bleu"], "delta", "≥ Joey",
                        other_b5["bleu"] >= joey_b5["bleu"], digits=2))
    return rows


def report(results: dict[str, Any], rows: list[Row]) -> str:
    m = suite.Machine(**results["machine"])
    feed = f"{VARIANT_LABELS[results['variant']]}, {results.get('precision', 'float32')} training"
    lines = [
        suite.SECTION_HEADING,
        "",
        f"`{results['command']}` ({results['mode']} mode) on {results['date']}; machine: {m.describe()}; "
        f"load average {results['load_average_start']} at the start, {results['load_average_end']} at the end. "
        f"torch 2.13.0 CPU for both; Joey NMT 2.3.0 in its own virtualenv (`benchmarks/peer/install.sh`).",
        "",
        f"Same data and model for both: Tatoeba ko→en, {results['data']['train_pairs']:,} training pairs, a joint SentencePiece "
        f"unigram vocabulary of {results['data']['vocab_size']:,} pieces each, embeddings 256, 2-layer BiLSTM encoder 256, "
        f"2-layer LSTM decoder 256, Bahdanau attention, dropout 0.3, Adam 1e-3 (constant), label smoothing 0.1, clipping 1.0; "
        f"Joey batches 64 sentences, ours length-bucketed token batches of about as many (configs/benchmark-koen.yaml, "
        f"ours {feed}, Joey with input feeding, its default). Test set: {results['test_set']['sentences']} pairs of "
        f"{results['test_set']['note']}; "
        f"BLEU (sacreBLEU 13a) and chrF of both systems' detokenized output by the same `score_corpus` call. "
        f"Training budget {results['budget']['minutes']:g} min each from the start of the training loop, validating "
        f"every {results['budget']['validate_every']} Joey steps (ours every as many sentences). Each command runs in its "
        f"own process; peak RSS is that process's. Ratio = ours ÷ Joey (BLEU: difference).",
        "",
        suite.render_table(rows),
        "",
        f"Raw figures: `{results['work']}/results.json`. Settings: per measurement, ours runs with the faster of "
        f"oneDNN on/off (measured: {', '.join(results['settings']['mkldnn'])}) and, for single sentences, both systems with "
        f"their faster torch thread count (measured: {', '.join(results['settings']['latency_threads'])}); the notes say "
        f"which. Joey keeps torch's defaults otherwise (oneDNN on). Whole-command timings include Python start-up and "
        f"model loading.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Full mode takes about 50 minutes on 2 cores (26 with --minutes 5); --quick under 3 minutes on an idle machine.")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (CI smoke); RESULTS.md is left alone unless --write-results")
    parser.add_argument("--minutes", type=float, help="training budget per system, minutes (full 10, quick 0.25)")
    parser.add_argument("--steps", type=int, help="timed training steps for throughput (full 200, quick 10)")
    parser.add_argument("--warmup-steps", type=int, help="untimed steps before them; also the log window (full 20, quick 5)")
    parser.add_argument("--validate-every", type=int, help="Joey steps between validations in the budget run (full 100, quick 10)")
    parser.add_argument("--test-sentences", type=int, help="use the first N dev pairs as the test set (full: all 974, quick 50)")
    parser.add_argument("--latency-inputs", type=int, help="single-sentence inputs (full 200, quick 20)")
    parser.add_argument("--variant", choices=tuple(VARIANTS), default="feed",
                        help="our model in the headline column: with input feeding (feed, default), without (no-feed), or with it in float32 (feed-fp32)")
    parser.add_argument("--both-variants", action=argparse.BooleanOptionalAction, default=None,
                        help="also train and score the other variants (default: on in full mode, off with --quick)")
    parser.add_argument("--mkldnn", choices=("both", "on", "off"), help="oneDNN settings to measure ours with (full: both, quick: off)")
    parser.add_argument("--latency-threads", type=int, nargs="+", metavar="N",
                        help="torch thread counts for the single-sentence runs of both systems, 0 = torch's default "
                             "(full: 1 0, quick: 1); the table shows each system's fastest")
    parser.add_argument("--peer-venv", type=Path, default=DEFAULT_PEER_VENV, help=f"Joey's virtualenv (default $PEER_VENV or {DEFAULT_PEER_VENV})")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"Tatoeba folder (default {DEFAULT_DATA})")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="our model and training config")
    parser.add_argument("--default-model", type=Path, default=DEFAULT_MODEL, help="the shipped model for the phrase latency rows")
    parser.add_argument("--glossary", type=Path, default=DEFAULT_GLOSSARY, help="English phrases for them come from its glosses")
    parser.add_argument("--work", type=Path, help="working folder (default runs/benchmark or runs/benchmark-quick)")
    parser.add_argument("--write-results", action=argparse.BooleanOptionalAction, default=None,
                        help="write the section into benchmarks/RESULTS.md (default: on in full mode, off with --quick)")
    parser.add_argument("--report-from", type=Path, metavar="RESULTS_JSON",
                        help="measure nothing: render the table of a finished run's results.json (and write it unless --no-write-results)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.work is None:
        args.work = ROOT / "runs" / ("benchmark-quick" if args.quick else "benchmark")
    args.work = args.work.resolve()
    if args.both_variants is None:
        args.both_variants = not args.quick
    if args.write_results is None:
        args.write_results = not args.quick
    if args.report_from is not None and not args.report_from.is_file():
        parser.error(f"--report-from: {args.report_from} is not a file")
    if args.mkldnn is None:
        args.mkldnn = "off" if args.quick else "both"
    if args.latency_threads is None:
        args.latency_threads = [1] if args.quick else [1, 0]
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    # A handled (not ignored) SIGINT is reset to the default in every child at exec, so Python children
    # turn it into KeyboardInterrupt even when this script was started with SIGINT ignored (a background
    # job): Joey is stopped at its time budget with SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    budget = QUICK if args.quick else FULL
    overrides = {"minutes": args.minutes, "steps": args.steps, "warmup_steps": args.warmup_steps,
                 "validate_every": args.validate_every, "test_sentences": args.test_sentences, "latency_inputs": args.latency_inputs}
    budget = replace(budget, **{k: v for k, v in overrides.items() if v is not None})
    problems = [name for name, value in (("--minutes", budget.minutes), ("--steps", budget.steps), ("--warmup-steps", budget.warmup_steps),
                                         ("--validate-every", budget.validate_every), ("--latency-inputs", budget.latency_inputs))
                if value <= 0]
    if budget.test_sentences is not None and budget.test_sentences < 1:
        problems.append("--test-sentences")
    if problems:
        print(f"run.py: error: {', '.join(problems)} must be > 0", file=sys.stderr)
        return 2
    if budget.steps < budget.warmup_steps:
        print("run.py: error: --steps must be at least --warmup-steps (one logged window after the warm-up)", file=sys.stderr)
        return 2
    if args.report_from:  # re-render a finished run's table (e.g. after the table gains a row)
        try:
            results = json.loads(args.report_from.read_text(encoding="utf-8"))
            section = report(results, table_rows(results))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            print(f"run.py: error: --report-from {args.report_from}: not a results.json written by benchmarks/run.py "
                  f"({type(err).__name__}: {err})", file=sys.stderr)
            return 2
        return finish(args, section)
    try:
        results = measure(args, budget)
        rows = table_rows(results)
    except SetupError as err:
        print(f"run.py: error: {err}", file=sys.stderr)
        return 2
    except MeasurementError as err:
        print(f"run.py: error: {err}", file=sys.stderr)
        return 1
    except (ValueError, KeyError, OSError) as err:  # e.g. a log without the lines it should have
        import traceback

        traceback.print_exc()
        print(f"run.py: error: {type(err).__name__}: {err} (logs of every command: {args.work / 'logs'})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        stop_children()
        print("run.py: interrupted", file=sys.stderr)
        return 130
    finally:
        stop_children()
    return finish(args, report(results, rows))


def finish(args: argparse.Namespace, section: str) -> int:
    """Print the section and write it into RESULTS.md (unless --no-write-results)."""
    print(section)
    if args.write_results:
        from translator.io import atomic_write_text

        existing = args.results.read_text(encoding="utf-8") if args.results.is_file() else ""
        atomic_write_text(args.results, suite.replace_section(existing, suite.SECTION_HEADING, section))
        say(f"wrote the '{suite.SECTION_HEADING[3:]}' section of {args.results}")
    say(f"done in {time.monotonic() - _STARTED:.0f} s; raw figures in {args.report_from or args.work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
