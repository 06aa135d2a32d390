"""Single-sentence latency of a trained Joey NMT 2.3.0 model, through Joey's own Python API.

    $PEER_VENV/bin/python benchmarks/peer/joey_driver.py --config translate.yaml --inputs sentences.txt --beams 1 5

Loads the model once (joeynmt.prediction.prepare, as `python -m joeynmt translate` does), wraps it in
Joey's TranslatorHubInterface (what torch.hub.load("joeynmt/joeynmt", ...) returns) and translates
the inputs one at a time, per beam size: a few warm-up sentences first, then every input timed alone.
Prints one JSON object on stdout: load seconds, per-beam latencies in ms and the outputs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: the shared timing loop
from latency import print_report, read_inputs, time_each  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="a Joey config whose testing.load_model is the checkpoint")
    parser.add_argument("--inputs", type=Path, required=True, help="source sentences, one per line")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--warmup", type=int, default=5, help="untimed translations before each beam's timed ones")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    args = parser.parse_args()
    inputs = read_inputs(args.inputs)

    started = time.perf_counter()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from joeynmt.config import load_config, parse_global_args
    from joeynmt.hub_interface import TranslatorHubInterface
    from joeynmt.prediction import prepare

    cfg = load_config(args.config)
    joey_args = parse_global_args(cfg, rank=0, mode="translate")
    model, _, _, stream = prepare(joey_args, rank=0, mode="translate")
    joey = TranslatorHubInterface(model, stream, joey_args)
    loaded = time.perf_counter() - started
    logging.disable(logging.INFO)  # Joey logs every call; keep that out of the timings
    report = {"system": "joey", "load_seconds": round(loaded, 3), "inputs": len(inputs), "threads": torch.get_num_threads(),
              "mkldnn": "on" if torch.backends.mkldnn.enabled else "off"}

    def translate_one(text: str, beam: int) -> str:
        return joey.translate([text], beam_size=beam, beam_alpha=1.0 if beam > 1 else -1)[0]

    report["beams"] = time_each(translate_one, inputs, args.beams, args.warmup)
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
