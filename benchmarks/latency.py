"""Timing one input at a time, shared by ours_driver.py and peer/joey_driver.py (standard library only:
the peer's driver runs in Joey's virtualenv, where the translator package is not installed)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable


def read_inputs(path: Path) -> list[str]:
    """Non-empty lines of `path`; exits with one line when there are none."""
    inputs = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not inputs:
        raise SystemExit(f"{path}: no inputs")
    return inputs


def time_each(translate_one: Callable[[str, int], str], inputs: list[str], beams: list[int], warmup: int) -> dict[str, Any]:
    """Per beam size: `warmup` untimed inputs, then every input translated and timed alone.
    Returns {beam: {"latencies_ms": [...], "outputs": [...]}}."""
    results: dict[str, Any] = {}
    for beam in beams:
        for text in inputs[:warmup]:
            translate_one(text, beam)
        latencies, outputs = [], []
        for text in inputs:
            t0 = time.perf_counter()
            outputs.append(translate_one(text, beam))
            latencies.append((time.perf_counter() - t0) * 1000)
        results[str(beam)] = {"latencies_ms": [round(v, 3) for v in latencies], "outputs": outputs}
    return results


def print_report(report: dict[str, Any]) -> None:
    json.dump(report, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
