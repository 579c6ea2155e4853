"""PromQL as the dashboard and the alerts write it, against the series the server exports.

Why: a query naming a metric that does not exist shows an empty panel or an alert that never fires,
and nothing else would say so.
"""

from __future__ import annotations

import re

from prometheus_client.metrics import MetricWrapperBase

from mutator import metrics


def exported_series() -> dict[str, str]:
    """Every series name the server exports → its family, from the metric objects it registers."""
    names: dict[str, str] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                        "gauge": ("",)}[family.type]
            for suffix in suffixes:
                names[family.name + suffix] = family.name
    return names


FUNCTIONS = {"sum", "rate", "irate", "increase", "histogram_quantile", "max", "min", "avg", "count",
             "absent", "time", "clamp_min", "topk", "label_values"}
KEYWORDS = {"by", "without", "and", "or", "unless", "on", "ignoring", "bool"}
PROMETHEUS_OWN = {"up"}  # written by Prometheus itself for every target


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL expression selects; an unknown function name fails the test."""
    stripped = re.sub(r'"[^"]*"', '""', query)  # label values
    stripped = re.sub(r"\{[^}]*\}", "", stripped)  # matchers
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # ranges
    stripped = re.sub(r"\b(by|without)\s*\([^)]*\)", "", stripped)  # grouping labels
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", stripped):  # not inside 1e3
        word = match.group()
        if word in KEYWORDS:
            continue
        if stripped[match.end():].lstrip().startswith("("):
            assert word in FUNCTIONS, f"unknown PromQL function {word} in {query}"
            continue
        names.add(word)
    return names
