"""Prometheus metrics: what the server counts, and `GET /metrics`'s text.

Counters and histograms move where things happen (a request ends, a stream opens, a job
settles, a ledger row is written); figures that live in the database (jobs by status,
database and ciphertext bytes) are read when scraped, so any worker answers them exactly.

Under gunicorn, prometheus-client runs in its multiprocess mode: `serving` points
`PROMETHEUS_MULTIPROC_DIR` at a folder shared by the master and its workers *before*
prometheus-client is first imported (it picks its value store at import), every process
writes its counts there, and a scrape sums them. That is why this module imports
prometheus-client only inside functions. Without that variable (tests, one process) each
`Metrics` keeps its own registry, so several apps in one process never mix their counts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Request latency up to the response's headers; a stream's headers come right after its checks.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# (name, help, labels) of every counter; the attribute is the name without `telentir_`/`_total`.
_COUNTERS = (
    ("telentir_http_requests_total", "HTTP requests answered.", ("method", "route", "status")),
    ("telentir_broker_publishes_total", "Doorbells published to the event broker.", ()),
    ("telentir_broker_publish_failures_total", "Doorbells the event broker did not take.", ()),
    ("telentir_sse_hub_backlog_cuts_total", "SSE streams cut because the client fell 4 MiB behind.", ()),
    ("telentir_jobs_finished_total", "Ingestion jobs settled, by final status.", ("status",)),
    ("telentir_records_ingested_total", "Records written by ingestion jobs.", ()),
    ("telentir_lead_reservations_total", "Lead jobs that reserved prepaid credit.", ("billing",)),
    ("telentir_lead_reserved_cents_total", "Prepaid credit reserved by lead jobs, in cents.", ("billing",)),
    ("telentir_lead_charges_total", "Lead jobs that charged prepaid credit.", ("billing",)),
    ("telentir_lead_charged_cents_total", "Prepaid credit charged for leads written, in cents.", ("billing",)),
    ("telentir_lead_refunds_total", "Refunds of unused reservations.", ("billing",)),
    ("telentir_lead_refunded_cents_total", "Reserved credit given back, in cents.", ("billing",)),
    ("telentir_limit_refusals_total", "Requests refused by an abuse limit (docs/security.md), by limit.", ("limit",)),
    (
        "telentir_engine_unavailable_total",
        "Operations refused (503), and tries failed, because a storage engine could not be reached, by engine.",
        ("engine",),
    ),
    ("telentir_disk_full_total", "Writes refused (507) for want of disk space.", ()),
)


class Metrics:
    """The server's counters, gauges and histograms, and their exposition."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess_dir = multiprocess_dir
        # In multiprocess mode the values live in files; the registry only keeps the objects.
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters = {name: Counter(name, doc, labels, registry=self.registry) for name, doc, labels in _COUNTERS}
        self.request_seconds = Histogram(
            "telentir_http_request_duration_seconds",
            "Time from a request's arrival to its response headers.",
            ("method", "route"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        # livesum: the streams of workers that are alive (a dead worker's files are dropped).
        self.open_streams = Gauge(
            "telentir_open_streams",
            "Event streams open now, by transport.",
            ("transport",),
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        for transport in ("sse", "websocket"):
            self.open_streams.labels(transport=transport)  # exported at 0 before the first stream
        # The request counter's and histogram's children by (method, route, status); a race only
        # asks prometheus-client twice for the same child.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    @classmethod
    def from_environment(cls) -> Metrics:
        """Multiprocess when `PROMETHEUS_MULTIPROC_DIR` names a folder (set up by `serving`), else in-process."""
        return cls(os.environ.get(MULTIPROC_ENV) or None)

    def _count(self, name: str, amount: float = 1, **labels: str) -> None:
        counter = self._counters[name]
        (counter.labels(**labels) if labels else counter).inc(amount)

    # --- what the server reports ---------------------------------------------------------

    def request_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request got its response headers after `seconds`."""
        method = method if method in _METHODS else "other"  # a client's method must not mint label values
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:  # prometheus-client's labels() is the dearest part of counting: once per key
            counter = self._counters["telentir_http_requests_total"].labels(
                method=method, route=route, status=str(status)
            )
            children = self._request_children[key] = (counter, self.request_seconds.labels(method=method, route=route))
        children[0].inc()
        children[1].observe(seconds)

    def stream_opened(self, transport: str) -> None:
        """An SSE (`sse`) or WebSocket (`websocket`) event stream opened."""
        self.open_streams.labels(transport=transport).inc()

    def stream_closed(self, transport: str) -> None:
        """That stream ended."""
        self.open_streams.labels(transport=transport).dec()

    def broker_publish(self, ok: bool) -> None:
        """A doorbell was published (or failed to be)."""
        self._count("telentir_broker_publishes_total" if ok else "telentir_broker_publish_failures_total")

    def limit_refused(self, limit: str) -> None:
        """One request refused by the abuse limit named `limit` (its setting's name, lower case, without TELENTIR_)."""
        self._count("telentir_limit_refusals_total", limit=limit)

    def engine_unavailable(self, engine: str) -> None:
        """An operation failed because `engine` (postgresql, sqlite, s3, redis) could not be reached."""
        self._count("telentir_engine_unavailable_total", engine=engine)

    def disk_full(self) -> None:
        """A write was refused for want of disk space (a full disk, or below TELENTIR_MIN_FREE_BYTES)."""
        self._count("telentir_disk_full_total")

    def hub_backlog_cut(self) -> None:
        """The SSE hub cut a stream whose client stopped reading."""
        self._count("telentir_sse_hub_backlog_cuts_total")

    def records_ingested(self, count: int) -> None:
        """An ingestion batch committed `count` records."""
        self._count("telentir_records_ingested_total", count)

    def lead_reserved(self, billing: str, cents: int) -> None:
        """A lead job reserved `cents` of prepaid credit (`local` ledger or `stripe`)."""
        if cents > 0:
            self._count("telentir_lead_reservations_total", billing=billing)
            self._count("telentir_lead_reserved_cents_total", cents, billing=billing)

    def lead_refunded(self, billing: str, cents: int) -> None:
        """Unused reserved credit went back to the user."""
        if cents > 0:
            self._count("telentir_lead_refunds_total", billing=billing)
            self._count("telentir_lead_refunded_cents_total", cents, billing=billing)

    def job_settled(self, status: str, billing: str, charged_cents: int, refunded_cents: int) -> None:
        """An ingestion job ended with `status`, charging and refunding what it did."""
        self._count("telentir_jobs_finished_total", status=status)
        if charged_cents > 0:
            self._count("telentir_lead_charges_total", billing=billing)
            self._count("telentir_lead_charged_cents_total", charged_cents, billing=billing)
        self.lead_refunded(billing, refunded_cents)

    # --- exposition -------------------------------------------------------------------------

    def exposition(self, read_gauges: Callable[[], Iterable[Any]]) -> bytes:
        """The Prometheus text of every process's counts plus `read_gauges()`'s metric families."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry(auto_describe=False)
        if self.multiprocess_dir:
            MultiProcessCollector(registry, path=self.multiprocess_dir)
        else:
            registry.register(_Collect(self.registry.collect))
        registry.register(_Collect(read_gauges))
        return bytes(generate_latest(registry))


class _Collect:
    """A collector made of a function returning metric families."""

    def __init__(self, collect: Callable[[], Iterable[Any]]) -> None:
        self.collect = collect


def gauge_family(
    name: str, doc: str, samples: Iterable[tuple[dict[str, str], float]], labels: tuple[str, ...] = ()
) -> Any:
    """A gauge family read at scrape time (labels given per sample)."""
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for label_values, value in samples:
        family.add_metric([label_values[label] for label in labels], value)
    return family
