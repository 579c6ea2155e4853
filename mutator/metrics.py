"""Prometheus metrics, defined once so that every module counts into the same series.

Label values are bounded by construction: modes, outcomes, cache names, request
kinds and status classes are closed sets. Image names, namespaces and registry
hosts are never label values (a cluster's worth of them would blow up the
series count of every scrape).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric


class _Tally:
    """Counter increments of the warm path, noted here and applied to the counters in batches.

    Why: a bound counter's ``inc()`` takes a lock and checks its argument (about
    1.2 µs), and a replica's admission made four. Noting the tuple of counters it
    adds one to is a list append (a C call, no code of ours on the warm path);
    :meth:`apply` adds them up and increments each counter once per batch. It runs
    on every wake-up of :mod:`mutator.serve.loopstats` (4 a second: the bound on
    what waits) and whenever the registry is collected (a scrape,
    ``get_sample_value``), before any metric is: this collector is registered
    ahead of every metric in this module, and the registry collects in
    registration order, so a scrape never reads a count behind.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Any, ...]] = []
        self.add = self._pending.append  # (counters): count one for each of them

    def apply(self) -> None:
        """Add what was noted to the counters themselves."""
        pending = self._pending
        taken = len(pending)
        if not taken:
            return
        batch = collections.Counter(pending[:taken])
        del pending[:taken]
        for counters, times in batch.items():
            for counter in counters:
                counter.inc(times)

    def collect(self) -> Iterator[Metric]:
        self.apply()
        return iter(())


_TALLY = _Tally()
REGISTRY.register(_TALLY)  # type: ignore[arg-type]  # first: see _Tally
tally = _TALLY.add
apply_tallies = _TALLY.apply

# Fine below 10 ms, where a warm admission lives; coarse up to the API server's 30 s ceiling.
_FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1, 2.5, 5, 10, 30)
_REGISTRY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

BUILD_INFO = Gauge("nonroot_mutator_build_info", "Always 1; the version in a label.", ["version"])

ADMISSIONS = Counter(
    "nonroot_mutator_admissions_total",
    "AdmissionReviews answered, by mode and result (patched, allowed, refused, bad_request, error).",
    ["mode", "result"],
)
ADMISSION_SECONDS = Histogram(
    "nonroot_mutator_admission_duration_seconds",
    "Time from receiving an AdmissionReview to answering it, by mode and result.",
    ["mode", "result"],
    buckets=_FAST_BUCKETS,
)
CONTAINERS = Counter(
    "nonroot_mutator_containers_total",
    "Containers decided on, by outcome (patch, skip, root, unresolvable, unavailable).",
    ["mode", "outcome"],
)
DEADLINE_EXPIRED = Counter(
    "nonroot_mutator_deadline_expired_total",
    "Admissions answered with a temporary failure because a lookup outlived the deadline.",
    ["mode"],
)
INFLIGHT_ADMISSIONS = Gauge("nonroot_mutator_inflight_admissions", "Admissions being answered now.")

CACHE_LOOKUPS = Counter(
    "nonroot_mutator_cache_lookups_total",
    "Cache lookups by cache (tag, image, layer, access, decision) and result (hit, miss, coalesced); "
    "a Pod answered from the decision cache skips the tag and image caches while its decision is trusted.",
    ["cache", "result"],
)
CACHE_ENTRIES = Gauge(
    "nonroot_mutator_cache_entries", "Entries held, by cache (tag, image, layer, access, decision).",
    ["cache"]
)
INFLIGHT_LOOKUPS = Gauge(
    "nonroot_mutator_inflight_lookups", "Lookups in flight, shared by every waiter, by cache.", ["cache"]
)

REGISTRY_LOOKUPS = Counter(
    "nonroot_mutator_registry_lookups_total",
    "Image lookups against a registry, by result (resolved, failed, temporary_failure).",
    ["result"],
)
REGISTRY_SECONDS = Histogram(
    "nonroot_mutator_registry_lookup_duration_seconds",
    "Time of one image lookup against its registry (manifest, config and any layers).",
    buckets=_REGISTRY_BUCKETS,
)
REGISTRY_REQUESTS = Counter(
    "nonroot_mutator_registry_requests_total",
    "HTTP requests to registries, by kind (ping, token, manifest, config, layer) and status class "
    "(2xx, 3xx, 4xx, 5xx, error for no answer).",
    ["kind", "status_class"],
)
REGISTRY_REQUEST_SECONDS = Histogram(
    "nonroot_mutator_registry_request_duration_seconds",
    "Time to the response headers of one registry request, by kind.",
    ["kind"],
    buckets=_REGISTRY_BUCKETS,
)
LAYER_BYTES = Counter(
    "nonroot_mutator_layer_bytes_total",
    "Compressed layer bytes streamed to find /etc/passwd and /etc/group.",
)

WARMUP_IMAGES = Gauge(
    "nonroot_mutator_warmup_images",
    "Warm-up progress: images found in stored Pods (total), answered for every Pod that runs them "
    "(done), not answered for at least one (failed).",
    ["state"],
)
EVENT_LOOP_LAG = Gauge(
    "nonroot_mutator_event_loop_lag_seconds",
    "Worst delay of the event loop in waking up a timer, over the last 5 s (0 when idle and healthy).",
)
TASKS_ALIVE = Gauge("nonroot_mutator_asyncio_tasks", "Asyncio tasks alive in the server's event loop.")
TLS_NOT_AFTER = Gauge(
    "nonroot_mutator_tls_certificate_expiry_timestamp_seconds",
    "Unix time at which the serving certificate in use expires.",
)
DOCKER_CONFIG_RELOADS = Counter(
    "nonroot_mutator_docker_config_reloads_total",
    "Changes of the docker_config file seen, by result (loaded: its credentials are in use; "
    "invalid: unreadable or not JSON, the previous ones are kept).",
    ["result"],
)
