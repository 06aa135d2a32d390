"""Prometheus metrics: requests and latency by route and status, translations by direction.

Under gunicorn every worker is its own process, so prometheus_client's multiprocess mode is used
(gunicorn_conf.py sets PROMETHEUS_MULTIPROC_DIR): /metrics then adds up all workers' counts.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# Latency buckets (seconds) around what a word or phrase costs: a few ms cached, tens of ms decoded.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        # A registry per app, so that several apps (tests) can live in one process.
        self.registry = CollectorRegistry()
        self.requests = Counter("translator_http_requests_total", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("translator_http_request_duration_seconds", "HTTP request latency by route and status",
                                 ["route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.translations = Counter("translator_translations_total", "Texts translated, by direction",
                                    ["direction"], registry=self.registry)
        self.cache = Counter("translator_cache_lookups_total", "Translation cache lookups by result",
                             ["result"], registry=self.registry)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, str(status)).observe(seconds)

    def observe_translations(self, directions: list[str], cache_hits: int) -> None:
        for direction in directions:
            self.translations.labels(direction).inc()
        self.cache.labels("hit").inc(cache_hits)
        self.cache.labels("miss").inc(len(directions) - cache_hits)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this process, or of all workers in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        else:
            registry = self.registry
        return generate_latest(registry), CONTENT_TYPE_LATEST
