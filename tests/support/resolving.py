"""A resolver against the loopback registry, for the test tiers that drive the layer scan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import aiohttp

from mutator.config import from_mapping
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.resolver import Resolver


class Reachable(Protocol):
    """A loopback registry, or a proxy in front of one: all a resolver needs is where it listens."""

    @property
    def host(self) -> str: ...


async def open_session() -> AsyncIterator[aiohttp.ClientSession]:
    """Body of a ``session`` fixture: ``session = pytest.fixture(open_session)`` in a test module."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def make_resolver(session: aiohttp.ClientSession, registry: Reachable, **settings: object) -> Resolver:
    """A resolver reaching *registry* (or a proxy) over plain HTTP, with further config *settings*."""
    config = from_mapping({"registries": {registry.host: {"plain_http": True}}, **settings})
    return Resolver(client=RegistryClient(session=session, registries=config.registry), config=config)
