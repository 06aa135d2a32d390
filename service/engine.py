"""The loaded model behind the routes: a reloadable `Translator`, a cache of recent translations and
a micro-batcher that decodes concurrent requests together.

A reload builds the new model completely before swapping one reference (model and cache together),
so a broken file never replaces a working model.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Hashable, Optional

from service.batching import MicroBatcher
from service.validation import Job, model_text
from translator.prediction import Translation, Translator

log = logging.getLogger("service.engine")
PROBE_TEXT = {"en": "water", "ko": "물"}  # a word any model knows well enough to answer


class LRUCache:
    """A thread-safe least-recently-used map with a fixed number of entries (0 = keep nothing)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[Hashable, Translation] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Optional[Translation]:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Translation) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class LoadedModel:
    translator: Translator
    sha256: str
    loaded_at: float
    cache: LRUCache = field(repr=False)

    @property
    def model_id(self) -> str:
        return self.translator.model_id


@dataclass
class Outcome:
    model_id: str
    translations: list[Translation]
    cache_hits: int


class TranslationEngine:
    def __init__(self, model_path: str | Path, cache_size: int = 2048, batching: bool = True,
                 quantize: Optional[str] = None):
        self.model_path = Path(model_path)
        self.cache_size = cache_size
        self.quantize = quantize  # None (float32) or "int8"; kept across reloads
        self.current = self._load()
        # Concurrent requests' texts are decoded together by one thread per process (see batching.py).
        self.batcher: Optional[MicroBatcher[Job, Translation]] = MicroBatcher(self.decode) if batching else None

    def _load(self) -> LoadedModel:
        translator = Translator.load(self.model_path, quantize=self.quantize)  # a missing or corrupt file raises CheckpointError
        return LoadedModel(translator, _file_sha256(self.model_path), time.time(), LRUCache(self.cache_size))

    def reload(self) -> LoadedModel:
        """Re-read the model file; the old model stays if the new one cannot be loaded (the error is raised)."""
        self.current = self._load()
        return self.current

    @property
    def directions(self) -> set[str]:
        return self.current.translator.directions

    def source_lengths(self, jobs: list[Job]) -> list[int]:
        """Pieces each job's source (tag, text, context, end) encodes to, as the model will see it."""
        translator = self.current.translator
        lowercase, encoding = translator.config.data.lowercase, translator.config.data.context_encoding
        return [
            len(translator.tokenizer.encode_source(model_text(job.text, lowercase), job.target,
                                                   model_text(job.context, lowercase) if job.context else None, encoding))
            for job in jobs
        ]

    def translate(self, jobs: list[Job]) -> Outcome:
        """Translate jobs (cached ones are not decoded again); results come back in job order."""
        loaded = self.current  # the cache of the model this request started with
        results: list[Optional[Translation]] = [loaded.cache.get(job) for job in jobs]
        misses = [i for i, result in enumerate(results) if result is None]
        decode = self.batcher.submit if self.batcher is not None else self.decode
        for i, translation in zip(misses, decode([jobs[i] for i in misses])):
            results[i] = translation
            if not jobs[i].alignment:  # alignment matrices can be large: they are not kept
                loaded.cache.put(jobs[i], translation)
        return Outcome(loaded.model_id, results, len(jobs) - len(misses))  # type: ignore[arg-type]

    def decode(self, jobs: list[Job]) -> list[Translation]:
        """Decode with the current model: one library call per direction and search setting."""
        translator = self.current.translator
        results: list[Optional[Translation]] = [None] * len(jobs)
        ordered = sorted(range(len(jobs)), key=lambda i: _batch_key(jobs[i]))
        for _, group in groupby(ordered, key=lambda i: _batch_key(jobs[i])):
            indices = list(group)
            first = jobs[indices[0]]
            translations = translator.translate(
                [jobs[i].text for i in indices], first.source, first.target, beam=first.beam, n_best=first.n_best,
                context=[jobs[i].context for i in indices], alignment=first.alignment,
            )
            for i, translation in zip(indices, translations):
                results[i] = translation
        return results  # type: ignore[return-value]

    def probe(self) -> str:
        """Translate one word with the loaded model, bypassing the cache; returns the translation."""
        translator = self.current.translator
        direction = min(translator.directions)
        source, target = direction.split("-")
        [result] = translator.translate([PROBE_TEXT[source]], source, target, beam=1)
        return result.text


def _batch_key(job: Job) -> tuple:
    """Jobs that can be decoded in one call: same direction and search options (contexts may differ)."""
    return (job.source, job.target, job.beam, job.n_best, job.alignment)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
