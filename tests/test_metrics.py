"""Counts the warm path tallies (:func:`mutator.metrics.tally`) are in every read of the metrics."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY, generate_latest

from mutator import metrics
from mutator.serve import loopstats

LABELS = {"mode": "audit", "outcome": "patch"}


def containers() -> float:
    return REGISTRY.get_sample_value("nonroot_mutator_containers_total", LABELS) or 0.0


def test_tallied_counts_are_in_the_very_next_read_of_the_registry():
    before = containers()
    counter = metrics.CONTAINERS.labels(*LABELS.values())
    pair = (counter, metrics.CACHE_LOOKUPS.labels("decision", "hit"))
    hits = REGISTRY.get_sample_value("nonroot_mutator_cache_lookups_total",
                                     {"cache": "decision", "result": "hit"}) or 0.0
    metrics.tally(pair)
    metrics.tally(pair)
    metrics.tally((counter,))
    assert containers() == before + 3
    assert REGISTRY.get_sample_value("nonroot_mutator_cache_lookups_total",
                                     {"cache": "decision", "result": "hit"}) == hits + 2
    assert containers() == before + 3  # applied once, not again on each read


def test_a_scrape_shows_what_was_tallied_before_it():
    """The scrape's text, not only a sample lookup: the tally is applied before any metric is read."""
    before = containers()
    metrics.tally((metrics.CONTAINERS.labels(*LABELS.values()),))
    line = f'nonroot_mutator_containers_total{{mode="audit",outcome="patch"}} {before + 1}'
    assert line in generate_latest().decode().splitlines()


async def test_the_server_s_loop_applies_the_tallies_without_a_scrape():
    """Bounded without Prometheus: each wake-up of the loop watcher applies what waits."""
    counter = metrics.CONTAINERS.labels(*LABELS.values())
    before = counter._value.get()  # the counter itself, not a collect (which would apply them)
    metrics.tally((counter,))
    watcher = asyncio.create_task(loopstats.measure(interval=0.001))
    try:
        for _ in range(2000):  # bounded: a wake-up every millisecond
            if counter._value.get() == before + 1:
                break
            await asyncio.sleep(0.001)
    finally:
        watcher.cancel()
    assert counter._value.get() == before + 1
