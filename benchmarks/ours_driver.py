"""Our side of benchmarks/run.py's inference measurements, one process per measurement.

    python benchmarks/ours_driver.py translate --mkldnn off -- --model M --source ko --target en --beam 5 < src > hyp
    python benchmarks/ours_driver.py latency --mkldnn off --threads 1 --model M --source ko --target en --inputs src.txt

`translate` is exactly `translator translate ARGS` with oneDNN (mkldnn) switched on or off first (the
library leaves torch's default; the HTTP service turns it off). `latency` loads the model once and
translates the inputs one at a time per beam size (a few untimed warm-up inputs first), printing one
JSON object: load seconds, per-beam latencies in ms and the outputs. `--threads` sets torch's
intra-op threads (default: torch's own choice, one per core).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from latency import print_report, read_inputs, time_each


def _torch_settings(mkldnn: str, threads: int) -> None:
    import torch

    torch.backends.mkldnn.enabled = mkldnn == "on"
    if threads:
        torch.set_num_threads(threads)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    translate = commands.add_parser("translate", help="translator translate ARGS with oneDNN on or off")
    translate.add_argument("--mkldnn", choices=("on", "off"), default="on")
    translate.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    translate.add_argument("args", nargs=argparse.REMAINDER, help="-- then the arguments of translator translate")
    latency = commands.add_parser("latency", help="single-input latency, model loaded once")
    latency.add_argument("--mkldnn", choices=("on", "off"), default="off")
    latency.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    latency.add_argument("--model", type=Path, required=True)
    latency.add_argument("--quantize", choices=("int8",))
    latency.add_argument("--source", required=True)
    latency.add_argument("--target", required=True)
    latency.add_argument("--inputs", type=Path, required=True, help="one input per line")
    latency.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    latency.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()

    if args.command == "translate":
        _torch_settings(args.mkldnn, args.threads)
        from translator.cli import main as translator_main

        rest = args.args[1:] if args.args[:1] == ["--"] else args.args
        return translator_main(["translate", *rest])

    inputs = read_inputs(args.inputs)
    started = time.perf_counter()
    _torch_settings(args.mkldnn, args.threads)
    import torch

    from translator.prediction import Translator

    translator = Translator.load(args.model, quantize=args.quantize)
    loaded = time.perf_counter() - started
    report = {"system": "ours", "model_id": translator.model_id, "mkldnn": args.mkldnn, "quantize": args.quantize,
              "threads": torch.get_num_threads(),
              "load_seconds": round(loaded, 3), "inputs": len(inputs)}

    def translate_one(text: str, beam: int) -> str:
        return translator.translate([text], args.source, args.target, beam=beam)[0].text

    report["beams"] = time_each(translate_one, inputs, args.beams, args.warmup)
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
