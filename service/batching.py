"""Dynamic batching: the texts of concurrent requests are decoded together.

Decoding one word costs about as much as decoding a dozen at once (each step is dominated by fixed
per-call overhead, not arithmetic), so under load one thread per worker takes everything that is
queued, decodes it in one go and wakes the waiting requests. There is no timer: a lone request is
decoded at once, and batches form only while a decode is already running.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Generic, Optional, Sequence, TypeVar

log = logging.getLogger("service.batching")
Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Item, Result]):
    items: Sequence[Item]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[Result] = field(default_factory=list)
    error: Optional[BaseException] = None


class MicroBatcher(Generic[Item, Result]):
    def __init__(self, decode: Callable[[list[Item]], list[Result]], max_items: int = 64):
        self.decode = decode  # items -> one result per item, in order
        self.max_items = max_items
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._carry: Optional[_Pending] = None  # taken from the queue but did not fit the last batch
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._pid = 0

    def submit(self, items: Sequence[Item]) -> list[Result]:
        """Decode `items` (possibly together with other requests' items); blocks until they are done."""
        if not items:
            return []
        pending: _Pending = _Pending(items)
        self._ensure_thread()
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.results

    def _ensure_thread(self) -> None:
        # Threads do not survive fork: gunicorn preloads the app in the master, so each worker
        # starts its own decoding thread on first use.
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid():  # in a new process, nothing queued before the fork is ours
                self._queue, self._carry, self._thread, self._pid = queue.SimpleQueue(), None, None, os.getpid()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="decoder", daemon=True)
                self._thread.start()

    def _next_batch(self) -> list[_Pending]:
        """Block for one request, then take whatever else is queued, up to `max_items` items."""
        first, self._carry = self._carry or self._queue.get(), None
        batch, count = [first], len(first.items)
        while count < self.max_items:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                break
            if count + len(pending.items) > self.max_items:
                self._carry = pending
                break
            batch.append(pending)
            count += len(pending.items)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._finish(batch, self.decode([item for pending in batch for item in pending.items]))
            except Exception:  # decode each request alone, so one bad request cannot fail the others
                if len(batch) > 1:
                    log.warning("batched decode failed; retrying its %d requests one by one", len(batch))
                for pending in batch:
                    try:
                        self._finish([pending], self.decode(list(pending.items)))
                    except Exception as err:
                        pending.error = err
                        pending.done.set()

    @staticmethod
    def _finish(batch: list[_Pending], results: list) -> None:
        start = 0
        for pending in batch:
            pending.results = results[start : start + len(pending.items)]
            start += len(pending.items)
            pending.done.set()
