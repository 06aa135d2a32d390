"""Service settings: one frozen dataclass, filled from the environment by `from_env`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

# Limits the API promises (and the OpenAPI document states).
MAX_TEXTS = 64
MAX_CHARS = 512
MAX_BODY_BYTES = 64 * 1024
MAX_BEAM = 10
# Decoding cost grows with beam × source length² (attention over the source at each of up to
# 2 × length + 5 output steps), so one request may not exceed beam × Σ pieces² of this much:
# about 15 s of one core in the worst case; e.g. 64 full 512-character English texts at beam 1.
MAX_DECODE_WORK = 2_000_000


@dataclass(frozen=True)
class ServiceConfig:
    model_path: Path
    max_texts: int = MAX_TEXTS
    max_chars: int = MAX_CHARS  # per text and per context
    max_body_bytes: int = MAX_BODY_BYTES
    max_beam: int = MAX_BEAM
    max_decode_work: int = MAX_DECODE_WORK
    cache_size: int = 2048  # recent translations kept per worker (0 = no cache)
    batching: bool = True  # decode concurrent requests together (see batching.py)
    torch_threads: int = 0  # 0 = leave torch's setting alone (gunicorn sets it per worker in post_fork)
    quantize: Optional[str] = None  # "int8": dynamically quantized weights (faster; see translator.prediction)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "ServiceConfig":
        """TRANSLATOR_MODEL (default: the shipped model), TRANSLATOR_CACHE_SIZE, TRANSLATOR_BATCHING (1/0),
        TRANSLATOR_TORCH_THREADS, TRANSLATOR_QUANTIZE (int8, the default, or none)."""
        from translator.cli import DEFAULT_MODEL

        return cls(
            model_path=Path(environ.get("TRANSLATOR_MODEL") or DEFAULT_MODEL),
            cache_size=_int(environ, "TRANSLATOR_CACHE_SIZE", 2048),
            batching=_int(environ, "TRANSLATOR_BATCHING", 1) != 0,
            torch_threads=_int(environ, "TRANSLATOR_TORCH_THREADS", 0),
            quantize=_quantize(environ),
        )


def _quantize(environ: Mapping[str, str]) -> Optional[str]:
    """The service decodes with int8 weights unless told otherwise: 2.6× the requests per second of float32
    and p99 35.6 vs 79.6 ms at 16 connections, for 2 of 502 disambiguation dev answers and ≤ 0.13 BLEU
    (benchmarks/RESULTS.md). TRANSLATOR_QUANTIZE=none serves float32."""
    from translator.prediction import QUANTIZATIONS

    value = environ.get("TRANSLATOR_QUANTIZE", "").strip().lower() or "int8"
    if value in ("none", "float32"):
        return None
    if value not in QUANTIZATIONS:
        raise ValueError(f"TRANSLATOR_QUANTIZE={value!r} is not one of: none, {', '.join(QUANTIZATIONS)}")
    return value


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None
    if number < 0:
        raise ValueError(f"{name}={value!r} must not be negative")
    return number
