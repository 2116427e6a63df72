"""Prometheus metrics (spec/api.md §11): the numbers live where they happen, `/metrics` only reads them.

- `SchedulerMetrics`: counters and latency histograms the scheduler updates as it runs (ai00ref/server/scheduler.py).
  They belong to one scheduler, so loading another model starts them from zero, as a restarted process would.
- `HttpMetrics`: requests by route and status, and their durations (the request middleware updates them).
- `RuntimeCollector`: at each scrape, the current runtime's scheduler metrics and its gauges (queue length, busy
  slots, slots, whether a model is loaded), read from the scheduler itself.

Every metric is registered in the application's own `CollectorRegistry` (none in prometheus-client's global one), so
several apps in one process (the tests) never share numbers. The text format is prometheus-client's.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

PREFIX = "ai00"
# seconds: a step of a small model on a GPU is ~1 ms, the NumPy reference engine on a large model ~seconds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class SchedulerMetrics:
    """What one scheduler counts (thread-safe: prometheus-client's metrics lock themselves). Not registered
    anywhere: `collect()` hands them to whichever registry asks (RuntimeCollector)."""

    def __init__(self):
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "Prompt tokens of requests given a slot (cached "
                                     "prefixes included)", registry=None)
        self.prefilled_tokens = Counter(f"{PREFIX}_prefilled_tokens", "Prompt tokens fed to the engine (the "
                                        "prompt less its cached prefix)", registry=None)
        self.generated_tokens = Counter(f"{PREFIX}_generated_tokens", "Tokens sampled", registry=None)
        self.cache_lookups = Counter(f"{PREFIX}_prefix_cache_lookups", "Requests given a slot (each looks up the "
                                     "prefix cache)", registry=None)
        self.cache_hits = Counter(f"{PREFIX}_prefix_cache_hits", "Requests that started from a cached prefix",
                                  registry=None)
        self.cache_hit_tokens = Counter(f"{PREFIX}_prefix_cache_hit_tokens", "Prompt tokens taken from the prefix "
                                        "cache instead of being fed", registry=None)
        self.time_to_first_token = Histogram(f"{PREFIX}_time_to_first_token_seconds", "From the request entering "
                                             "the queue to its first sampled token", buckets=LATENCY_BUCKETS,
                                             registry=None)
        self.inter_token_latency = Histogram(f"{PREFIX}_inter_token_latency_seconds", "Between two sampled tokens "
                                             "of one request", buckets=LATENCY_BUCKETS, registry=None)

    def generated(self) -> int:
        """Tokens sampled so far (the web UI's tokens per second, from /api/models/state)."""
        return int(sum(sample.value for metric in self.generated_tokens.collect() for sample in metric.samples
                       if sample.name.endswith("_total")))

    def collect(self):
        for metric in (self.prompt_tokens, self.prefilled_tokens, self.generated_tokens, self.cache_lookups,
                       self.cache_hits, self.cache_hit_tokens, self.time_to_first_token, self.inter_token_latency):
            yield from metric.collect()


class HttpMetrics:
    """Requests by method, route (the route's template, e.g. `/v1/chat/completions`) and status."""

    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(f"{PREFIX}_http_requests", "HTTP requests answered", ["method", "route", "status"],
                                registry=registry)
        self.duration = Histogram(f"{PREFIX}_http_request_duration_seconds", "From the request's arrival to the "
                                  "end of its response (a stream's last event)", ["method", "route"],
                                  buckets=LATENCY_BUCKETS, registry=registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)


class RuntimeCollector:
    """The loaded runtime's numbers at scrape time. `current()` returns the runtime or None (no model)."""

    def __init__(self, current):
        self.current = current

    def describe(self):
        return []  # names vary with the runtime; nothing to check at registration

    def collect(self):
        runtime = self.current()
        scheduler = None if runtime is None else runtime.scheduler
        yield gauge("model_loaded", "1 while a model is loaded, else 0", 0 if scheduler is None else 1)
        if scheduler is None:
            return
        yield gauge("queue_length", "Requests waiting for a slot", scheduler.waiting_count())
        yield gauge("busy_slots", "Slots running a request", scheduler.busy())
        yield gauge("slots", "Slots (max_batch)", scheduler.max_batch)
        yield from scheduler.metrics.collect()


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


def app_registry(current_runtime) -> tuple[CollectorRegistry, HttpMetrics]:
    """A fresh registry for one application, with its HTTP metrics and the runtime collector."""
    registry = CollectorRegistry(auto_describe=False)
    http = HttpMetrics(registry)
    registry.register(RuntimeCollector(current_runtime))
    return registry, http
