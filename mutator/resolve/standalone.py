"""A resolver for one command-line run, with the same config (registries, cache bounds) as the server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

from mutator.config import Config
from mutator.resolve.registry.authn.credentials import CredentialSources
from mutator.resolve.registry.client import RegistryClient
from mutator.resolve.resolver import Resolver

T = TypeVar("T")


async def with_resolver(config: Config, work: Callable[[Resolver], Awaitable[T]], *,
                        credentials: CredentialSources) -> T:
    """Run *work* with a resolver whose registry session closes when it returns."""
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(session=session, registries=config.registry)
        return await work(Resolver(client=client, config=config, credentials=credentials))
