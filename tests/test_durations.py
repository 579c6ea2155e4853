"""Go durations, as the API server (``?timeout=``) and credential plugins (``cacheDuration``) write them."""

from __future__ import annotations

import pytest

from mutator import durations
from mutator.serve.server import parse_timeout


@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("1.5s", 1.5), (".5s", 0.5),
    ("250us", 0.00025), ("0", 0.0),
])
def test_go_durations_are_read_in_seconds(text, seconds):
    assert durations.parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "10x", "s", "1m 30s", "-5s", None, 10])
def test_anything_else_is_not_a_duration(text):
    with pytest.raises(ValueError):
        durations.parse(text)


@pytest.mark.parametrize(("query", "expected"), [
    ("10s", 10.0), ("1m30s", 90.0), (None, None), ("", None), ("0s", None), ("soon", None),
])
def test_the_api_servers_timeout_is_positive_or_absent(query, expected):
    # an unreadable or zero ?timeout= falls back to the configured default, never to "no time at all"
    assert parse_timeout(query) == expected
