"""The pure parts of the token flow: challenges and how long a token is kept."""

from datetime import UTC, datetime

import pytest

from mutator.resolve.registry.auth import parse_challenge, refresh_margin, token_lifetime

NOW = 1_800_000_000.0


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(("answer", "lifetime"), [
    ({}, 60),
    ({"expires_in": 300}, 300),
    ({"expires_in": 300, "issued_at": _iso(NOW - 100)}, 200),  # already 100 s old when it arrived
    ({"expires_in": 300, "issued_at": _iso(NOW + 500)}, 300),  # a server clock ahead never stretches it
    ({"expires_in": 30, "issued_at": _iso(NOW - 100)}, 0),  # expired on arrival: used once, not kept
    ({"expires_in": "300"}, 60), ({"expires_in": True}, 60), ({"expires_in": -5}, 60),
    ({"expires_in": 120, "issued_at": "yesterday"}, 120),
])
def test_token_lifetime(answer, lifetime):
    assert token_lifetime(answer, now_wall=NOW) == pytest.approx(lifetime)


@pytest.mark.parametrize(("lifetime", "margin"), [(60, 6), (5, 1), (3600, 30)])
def test_a_token_is_dropped_shortly_before_it_expires(lifetime, margin):
    assert refresh_margin(lifetime) == margin


def test_challenges_are_parsed_with_quoted_and_bare_values():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:team/app:pull,push",error=insufficient_scope')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "registry.example",
                      "scope": "repository:team/app:pull,push", "error": "insufficient_scope"}
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    assert parse_challenge("") == ("", {})
