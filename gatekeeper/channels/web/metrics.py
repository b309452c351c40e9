"""Prometheus metrics of this process: decisions by outcome and rule, IDs shared, latency."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gatekeeper.rules.errors import GatekeeperError

# (entity, Post IDs used in the window, limit or None when unlimited, binding ratio or None)
EntityGauge = tuple[str, int, int | None, float | None]


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

    def watch_entities(self, read: Callable[[], Iterable[EntityGauge]]) -> None:
        """Export every entity's R2 usage, read from the store at each scrape (for alerting
        near a limit, e.g. ``gatekeeper_entity_post_ids_ratio > 0.8``)."""
        self.registry.register(_EntityCollector(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EntityCollector:
    """Per-entity gauges computed at scrape time; nothing is kept between scrapes."""

    def __init__(self, read: Callable[[], Iterable[EntityGauge]]) -> None:
        self.read = read

    def describe(self) -> list[Metric]:
        return []  # no read of the store when the collector is registered

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("gatekeeper_entity_usage_up",
                               "1 if the per-entity usage could be read from the store.")
        used = GaugeMetricFamily("gatekeeper_entity_post_ids_used",
                                 "Post IDs shared with the entity in the rolling window (R2).",
                                 labels=["entity"])
        limit = GaugeMetricFamily("gatekeeper_entity_post_ids_limit",
                                  "The entity's Post ID limit (R2/R4); absent when unlimited "
                                  "(R3 exemption or unlimited R4 permission).",
                                  labels=["entity"])
        ratio = GaugeMetricFamily("gatekeeper_entity_post_ids_ratio",
                                  "Used / limit, the tighter of the entity's and its pool's "
                                  "(R10); absent when unlimited.", labels=["entity"])
        try:
            rows = list(self.read())
        except GatekeeperError:
            up.add_metric([], 0)  # fail closed elsewhere; here, say the figures are missing
            yield up
            return
        up.add_metric([], 1)
        for name, n, cap, share in rows:
            used.add_metric([name], n)
            if cap is not None:
                limit.add_metric([name], cap)
            if share is not None:
                ratio.add_metric([name], share)
        yield from (up, used, limit, ratio)
