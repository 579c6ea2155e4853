"""Prometheus metrics, defined once so that every module counts into the same series."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ADMISSIONS = Counter(
    "nonroot_mutator_admissions_total",
    "AdmissionReviews answered, by mode and result (patched, allowed, refused, bad_request).",
    ["mode", "result"],
)
ADMISSION_SECONDS = Histogram(
    "nonroot_mutator_admission_duration_seconds",
    "Time from receiving an AdmissionReview to answering it.",
    ["mode"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONTAINERS = Counter(
    "nonroot_mutator_containers_total",
    "Containers decided on, by outcome (patch, skip, root, unresolvable, unavailable).",
    ["mode", "outcome"],
)
CACHE_LOOKUPS = Counter(
    "nonroot_mutator_cache_lookups_total",
    "Image user lookups by cache result (hit, miss, coalesced).",
    ["result"],
)
# Bound once: labels() costs a lock and a dict lookup on the warm path.
CACHE_HIT = CACHE_LOOKUPS.labels("hit")
CACHE_MISS = CACHE_LOOKUPS.labels("miss")
CACHE_COALESCED = CACHE_LOOKUPS.labels("coalesced")
CACHE_ENTRIES = Gauge("nonroot_mutator_cache_entries", "Image users held in the cache.")
REGISTRY_LOOKUPS = Counter(
    "nonroot_mutator_registry_lookups_total",
    "Image lookups against a registry, by result (resolved, failed, temporary_failure).",
    ["result"],
)
REGISTRY_SECONDS = Histogram(
    "nonroot_mutator_registry_lookup_duration_seconds",
    "Time of one image lookup against its registry (manifest, config and any layers).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LAYER_BYTES = Counter(
    "nonroot_mutator_layer_bytes_total",
    "Compressed layer bytes streamed to find /etc/passwd and /etc/group.",
)
