"""Prometheus metrics of one server (a registry per app, so tests can run several)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, kv_stats: Callable[[], dict[str, int] | None],
                 counts: Callable[[], tuple[int, int]], queue: Callable[[], int]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ragkit_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("ragkit_request_seconds", "HTTP request latency, to the last "
                                 "byte (streams included)", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("ragkit_ttft_seconds", "chat completions: request received to "
                              "first generated text (retrieval and queueing included)",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("ragkit_generation_queue_seconds", "time a chat completion "
                                    "waited for the model", buckets=LATENCY_BUCKETS, registry=r)
        self.prefill = Counter("ragkit_prefill_tokens", "prompt tokens prefilled (computed) or "
                               "taken from cached chunk KVs (reused)", ["kind"], registry=r)
        self.completion_tokens = Counter("ragkit_completion_tokens", "generated tokens",
                                         registry=r)
        self.cancelled = Counter("ragkit_generations_cancelled", "generations stopped because "
                                 "the client disconnected", registry=r)
        r.register(_Live(kv_stats, counts, queue))

    def observe_answer(self, timings: dict[str, float]) -> None:
        self.prefill.labels("computed").inc(timings.get("prefill_tokens_computed", 0))
        self.prefill.labels("reused").inc(timings.get("prefill_tokens_reused", 0))
        self.completion_tokens.inc(timings.get("new_tokens", 0))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Live:
    """Values read at scrape time: the chunk-KV store's counters, index sizes, queue depth."""

    def __init__(self, kv_stats: Callable[[], dict[str, int] | None],
                 counts: Callable[[], tuple[int, int]], queue: Callable[[], int]) -> None:
        self.kv_stats, self.counts, self.queue = kv_stats, counts, queue

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.kv_stats() or {}
        for key, help_text in (("hits", "chunk-KV store lookups found"),
                               ("misses", "chunk-KV store lookups not found (computed)"),
                               ("puts", "chunk-KV entries written"),
                               ("evictions", "chunk-KV entries evicted from memory"),
                               ("bytes_read", "bytes read from the chunk-KV store"),
                               ("bytes_written", "bytes written to the chunk-KV store")):
            yield CounterMetricFamily(f"ragkit_kv_store_{key}", help_text,
                                      value=stats.get(key, 0))
        yield GaugeMetricFamily("ragkit_kv_store_memory_bytes", "bytes held by the memory tier",
                                value=stats.get("memory_bytes", 0))
        docs, chunks = self.counts()
        yield GaugeMetricFamily("ragkit_documents", "documents in the index", value=docs)
        yield GaugeMetricFamily("ragkit_chunks", "chunks in the index", value=chunks)
        yield GaugeMetricFamily("ragkit_generation_queue", "chat completions queued or running "
                                "on the model", value=self.queue())
