"""What a registry addresses by digest: descriptors, one platform's image, and blobs read as streams.

Kept apart from the client that fetches them: a descriptor is checked for shape
when it is read, and content must hash to the digest that addressed it, both
here, whether it arrives whole (:func:`verify`) or chunk by chunk
(:class:`BlobStream`, which hashes as it reads, so a layer is never held whole).
Cost: one hash update per chunk; bound: a blob may not pass its descriptor's size.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from mutator.errors import DigestMismatch, InvalidReference, RegistryError, RegistryUnavailable
from mutator.resolve.registry.reference import Reference, validate_digest

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Any, *, what: str) -> Descriptor:
        if not isinstance(data, dict):
            raise RegistryError(f"{what} is not an object")
        digest, size, media_type = data.get("digest"), data.get("size"), data.get("mediaType", "")
        if not isinstance(digest, str) or not isinstance(size, int) or size < 0:
            raise RegistryError(f"{what} lacks a valid digest and size")
        try:
            validate_digest(digest)
        except InvalidReference as exc:
            raise RegistryError(f"{what}: {exc}") from None
        platform = data.get("platform")
        return cls(str(media_type), digest, size, platform if isinstance(platform, dict) else None)


@dataclass(frozen=True, slots=True)
class Image:
    """One platform's image: its config document and its layers, bottom first."""

    reference: Reference
    digest: str  # what the reference resolved to (the index digest for a multi-platform tag)
    manifest_digest: str  # the platform-specific manifest
    config: Mapping[str, Any]
    layers: tuple[Descriptor, ...]


def _hasher(digest: str) -> Any:
    return hashlib.new(digest.partition(":")[0])


def verify(digest: str, data: bytes) -> None:
    hasher = _hasher(digest)
    hasher.update(data)
    if f"{digest.partition(':')[0]}:{hasher.hexdigest()}" != digest:
        raise DigestMismatch(f"content does not match its digest {digest}")


class BlobStream:
    """Chunks of one blob, hashed as they pass; a short, long or altered blob raises."""

    def __init__(self, chunks: AsyncIterator[bytes], descriptor: Descriptor) -> None:
        self._chunks = chunks
        self._descriptor = descriptor
        self._hasher = _hasher(descriptor.digest)
        self.bytes_read = 0
        self.verified = False

    async def next_chunk(self) -> bytes:
        """The next chunk, or ``b""`` at the end (after the digest has been verified)."""
        chunk = await self.next_unhashed()
        self.absorb(chunk)
        return chunk

    async def next_unhashed(self) -> bytes:
        """The next chunk, or ``b""`` at the end, left for :meth:`absorb` to count and hash.

        A layer scan calls ``absorb`` in its worker thread, so hashing a big layer
        does not run on the event loop.
        """
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return b""
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise RegistryUnavailable(f"blob {self._descriptor.digest} was cut off: {exc}") from None

    def absorb(self, chunk: bytes) -> None:
        """Count and hash a chunk from :meth:`next_unhashed`; ``b""`` (the end) checks the digest."""
        if not chunk:
            if self.bytes_read != self._descriptor.size:
                raise DigestMismatch(
                    f"blob {self._descriptor.digest} ended after {self.bytes_read} of "
                    f"{self._descriptor.size} bytes"
                )
            actual = f"{self._descriptor.digest.partition(':')[0]}:{self._hasher.hexdigest()}"
            if actual != self._descriptor.digest:
                raise DigestMismatch(f"blob {self._descriptor.digest} hashed to {actual}")
            self.verified = True
            return
        self.bytes_read += len(chunk)
        if self.bytes_read > self._descriptor.size:
            raise DigestMismatch(f"blob {self._descriptor.digest} is longer than its descriptor says")
        self._hasher.update(chunk)

    async def drain(self) -> None:
        """Read what is left, so the digest is checked."""
        while await self.next_chunk():
            pass
