"""Prometheus metrics of this process: decisions by outcome and rule, IDs shared, latency."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    """One registry per app, so tests and several apps in a process never share counts."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "gatekeeper_decisions", "Decisions taken, by channel, outcome and rule.",
            ["channel", "outcome", "rule"], registry=self.registry)
        self.ids_shared = Counter(
            "gatekeeper_ids_shared", "IDs delivered in shares, by kind.", ["kind"],
            registry=self.registry)
        self.latency = Histogram(
            "gatekeeper_request_seconds", "Time to answer an API request, by endpoint.",
            ["endpoint"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    def decision(self, channel: str, outcome: str, rule: str | None) -> None:
        self.decisions.labels(channel, outcome, rule or "").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
