"""Manifests, indexes and blobs over the OCI distribution API, every digest verified.

One :class:`RegistryClient` serves all registries through one aiohttp session.
Where each request goes and how it is retried is :mod:`mutator.resolve.registry.transport`'s
job; who is asking is :mod:`mutator.resolve.registry.auth`'s; the client joins them in one
auth step (:meth:`RegistryClient._authorized`) and judges the answers.
Everything the registry says is treated as untrusted: sizes are bounded, JSON is
checked for shape, and content must hash to the digest that addressed it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from mutator.errors import (
    InvalidReference,
    RegistryError,
    RegistryUnavailable,
    UnsupportedImage,
)
from mutator.resolve.registry import platforms
from mutator.resolve.registry.auth import ANONYMOUS, Authenticator, TokenAuthenticator
from mutator.resolve.registry.authn.keyring import Credential
from mutator.resolve.registry.content import CHUNK_BYTES, BlobStream, Descriptor, Image, verify
from mutator.resolve.registry.reference import Reference, validate_digest
from mutator.resolve.registry.settings import PlatformSpec, RegistrySettings
from mutator.resolve.registry.transport import Endpoint, Transport

log = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
# Without the index types in Accept, some registries answer 404 for a multi-platform tag.
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the limit the distribution spec recommends
MAX_CONFIG_BYTES = 8 * 1024 * 1024
MAX_INDEX_DEPTH = 2  # an index may point at an index once; deeper is hostile


class RegistryClient:
    """Reads images from registries. Owns no session: the caller's lifetime rules."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        registries: Callable[[str], RegistrySettings],
        auth: Authenticator | None = None,
    ) -> None:
        self._transport = Transport(session=session, registries=registries)
        self._auth = auth or TokenAuthenticator(session=session, tls=self._transport.tls)
        self._credentials: tuple[Credential, ...] = ()

    def with_credentials(self, credentials: Sequence[Credential]) -> RegistryClient:
        """This client for one lookup: requests offer *credentials* in order (none: anonymous).

        Transport and token cache are shared; only the candidates differ, so one
        Pod's credentials never serve another's lookup.
        """
        bound = copy.copy(self)
        bound._credentials = tuple(credentials)
        return bound

    async def _authorized(self, endpoint: Endpoint, ref: Reference, path: str, *, method: str,
                          kind: str, accept: str | None) -> aiohttp.ClientResponse:
        """The auth step: offer each candidate credential in turn, once more after its challenge.

        Like the kubelet, every matching credential is tried until one is let in;
        none means anonymous. At most two requests per candidate, however the
        registry answers.
        """
        url_path = f"/v2/{ref.repository}/{path}"
        url = endpoint.base_url + url_path
        candidates, index, answered = self._credentials or (ANONYMOUS,), 0, False
        while True:
            credential = candidates[index]
            headers = await self._auth.headers(registry=endpoint.host, url=url, repository=ref.repository,
                                               credential=credential)
            if accept:
                headers["Accept"] = accept
            response = await self._transport.send(method, endpoint, url_path, headers=headers, kind=kind)
            if response.status == 401 and not answered:
                challenge = response.headers.get("WWW-Authenticate", "")
                if await self._auth.challenged(registry=endpoint.host, url=url, repository=ref.repository,
                                               credential=credential, challenge=challenge,
                                               sent=headers.get("Authorization", "")):
                    response.close()
                    answered = True  # the retry with what the challenge taught us
                    continue
            if response.status in (401, 403):
                response.close()
                if index + 1 < len(candidates):
                    index, answered = index + 1, False
                    continue
                raise _denied(ref, endpoint.host, candidates, response.status)
            if index:  # this lookup's later requests start with the credential that was let in
                self._credentials = (credential, *(c for c in candidates if c is not credential))
            return response

    @asynccontextmanager
    async def _get(self, ref: Reference, path: str, *, kind: str, accept: str | None = None,
                   method: str = "GET") -> AsyncIterator[aiohttp.ClientResponse]:
        """``/v2/<name>/<path>`` from the first endpoint that has it; yields a 200 response.

        Mirrors come first; one that fails in any way (unreachable, an error
        status, a 404 because it lacks the image) falls through to the next, and
        the registry itself decides, as containerd does.
        """
        passed: list[str] = []
        for endpoint in self._transport.endpoints(ref.registry):
            if passed and not endpoint.is_mirror:
                log.info("%s: mirrors passed over for %s: %s", ref, path, "; ".join(passed))
            try:
                response = await self._authorized(endpoint, ref, path, method=method, kind=kind,
                                                  accept=accept)
            except RegistryError as exc:
                if not endpoint.is_mirror:
                    raise
                passed.append(f"{endpoint.host}: {exc}")
                continue
            if response.status == 200:
                break
            response.close()
            if not endpoint.is_mirror:
                raise _status_error(ref, path, response.status)
            passed.append(f"{endpoint.host}: HTTP {response.status}")
        try:
            yield response
        finally:
            response.close()

    async def _read(self, response: aiohttp.ClientResponse, *, limit: int, what: str) -> bytes:
        length = response.content_length
        if length is not None and length > limit:
            raise RegistryError(f"{what} is {length} bytes, over the {limit} byte limit")
        data = bytearray()
        try:
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                data += chunk
                if len(data) > limit:
                    raise RegistryError(f"{what} is over the {limit} byte limit")
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise RegistryUnavailable(f"{what} was cut off: {exc}") from None
        return bytes(data)

    async def manifest(self, ref: Reference, identifier: str) -> tuple[str, str, dict[str, Any]]:
        """Fetch a manifest or index: (media type, verified digest, document)."""
        async with self._get(ref, f"manifests/{identifier}", kind="manifest",
                             accept=MANIFEST_ACCEPT) as response:
            raw = await self._read(response, limit=MAX_MANIFEST_BYTES, what=f"manifest of {ref}")
            header_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            header_digest = response.headers.get("Docker-Content-Digest")
        # By digest: the content must match what we asked for. By tag: it must
        # match what the registry says it sent, when it says so.
        digest = identifier if ":" in identifier else header_digest
        if digest is None or not digest.startswith(("sha256:", "sha512:")):
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        verify(digest, raw)
        document = _json_object(raw, what=f"manifest of {ref}")
        media_type = document.get("mediaType") or header_type
        if document.get("schemaVersion") == 1:
            raise UnsupportedImage(f"{ref} has a Docker schema 1 manifest, which is not supported")
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            # OCI allows an absent mediaType: the shape tells which it is
            media_type = OCI_INDEX if "manifests" in document else OCI_MANIFEST
        return media_type, digest, document

    async def resolve_tag(self, ref: Reference) -> str | None:
        """The digest *ref*'s tag points at now, from a manifest ``HEAD``; None if not told.

        A HEAD is not a pull: Docker Hub counts manifest GETs, not HEADs, against
        its rate limit, so a tag is resolved this way and the manifest then
        fetched by digest (which a cache may already hold). A registry that
        answers without ``Docker-Content-Digest``, or does not allow HEAD, gets
        None and the caller GETs the tag instead.
        """
        if ref.digest:
            return ref.digest
        try:
            async with self._get(ref, f"manifests/{ref.identifier}", kind="manifest",
                                 accept=MANIFEST_ACCEPT, method="HEAD") as response:
                digest = response.headers.get("Docker-Content-Digest", "")
        except RegistryError as exc:
            if exc.temporary or exc.status in (401, 403, 404):
                raise
            return None  # e.g. 405: this registry only answers GET
        try:
            return validate_digest(digest.strip())
        except InvalidReference:
            return None

    async def readable(self, ref: Reference, digest: str) -> None:
        """Prove with a manifest ``HEAD`` that this client's credentials may read *digest* in *ref*'s
        repository; raises what a GET would have (401/403: every candidate was refused)."""
        async with self._get(ref, f"manifests/{digest}", kind="manifest", accept=MANIFEST_ACCEPT,
                             method="HEAD"):
            pass

    async def image(self, ref: Reference, platform: PlatformSpec, *,
                    manifest: tuple[str, str, dict[str, Any]] | None = None) -> Image:
        """Resolve *ref* to one platform's config and layers, following indexes if needed.

        *manifest* is what :meth:`manifest` already returned for ``ref.identifier``
        (a tag the caller had to GET): it is not fetched a second time.
        """
        if manifest is None:
            identifier = await self.resolve_tag(ref) or ref.identifier
            manifest = await self.manifest(ref, identifier)
        media_type, digest, document = manifest
        top_digest = digest
        seen = {digest}
        wanted = platforms.preference(platform)
        for depth in range(MAX_INDEX_DEPTH + 1):
            if media_type not in INDEX_TYPES:
                break
            if depth == MAX_INDEX_DEPTH:
                raise RegistryError(f"{ref}: indexes nest deeper than {MAX_INDEX_DEPTH}")
            chosen = _choose(document, platform, wanted, ref)
            if chosen.digest in seen:
                raise RegistryError(f"{ref}: index {digest} leads back to {chosen.digest}, a loop")
            seen.add(chosen.digest)
            media_type, digest, document = await self.manifest(ref, chosen.digest)
        config_desc = Descriptor.from_json(document.get("config"), what=f"config of {ref}")
        layers_json = document.get("layers")
        if not isinstance(layers_json, list):
            raise RegistryError(f"manifest of {ref} has no layer list")
        layers = tuple(
            Descriptor.from_json(layer, what=f"layer {i} of {ref}") for i, layer in enumerate(layers_json)
        )
        config = await self.config(ref, config_desc)
        return Image(ref, top_digest, digest, config, layers)

    async def config(self, ref: Reference, descriptor: Descriptor) -> dict[str, Any]:
        if descriptor.size > MAX_CONFIG_BYTES:
            raise RegistryError(f"config of {ref} is {descriptor.size} bytes, over the limit")
        async with self._get(ref, f"blobs/{descriptor.digest}", kind="config") as response:
            raw = await self._read(response, limit=descriptor.size, what=f"config of {ref}")
        verify(descriptor.digest, raw)
        return _json_object(raw, what=f"config of {ref}")

    @asynccontextmanager
    async def blob(self, ref: Reference, descriptor: Descriptor) -> AsyncIterator[BlobStream]:
        """Open a blob for streaming; its digest is checked if it is read to the end."""
        async with self._get(ref, f"blobs/{descriptor.digest}", kind="layer") as response:
            yield BlobStream(response.content.iter_chunked(CHUNK_BYTES), descriptor)


def _json_object(raw: bytes, *, what: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except ValueError:
        raise RegistryError(f"{what} is not JSON") from None
    if not isinstance(document, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return document


def _choose(index: Mapping[str, Any], platform: PlatformSpec, wanted: list[tuple[str, str, str]],
            ref: Reference) -> Descriptor:
    """The entry the node would run (see :mod:`mutator.resolve.registry.platforms` for the rules)."""
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise RegistryError(f"index of {ref} has no manifest list")
    best: tuple[int, Descriptor] | None = None
    for i, entry in enumerate(entries):
        desc = Descriptor.from_json(entry, what=f"index entry {i} of {ref}")
        position = platforms.rank(desc.platform, wanted)
        if position is not None and (best is None or position < best[0]):
            best = (position, desc)
    if best is None:
        available = sorted(
            "/".join(str(v) for v in (d.get("platform") or {}).values() if isinstance(v, str))
            for d in entries if isinstance(d, dict)
        )
        raise RegistryError(f"{ref} has no {platform} image (it has {', '.join(available) or 'none'})")
    return best[1]


def _denied(ref: Reference, host: str, candidates: Sequence[Credential], status: int) -> RegistryError:
    """Say who was refused, never with what: sources and fingerprints only."""
    if all(c.anonymous for c in candidates):
        return RegistryError(
            f"{ref}: {host} requires authentication (HTTP {status}) and no credentials match this image",
            status=status)
    tried = ", ".join(str(c) for c in candidates)
    return RegistryError(f"{ref}: {host} refused every matching credential (HTTP {status}): {tried}",
                         status=status)


def _status_error(ref: Reference, path: str, status: int) -> RegistryError:
    what = "manifest" if path.startswith("manifests/") else "blob"
    if status == 404:
        return RegistryError(f"{ref}: {what} not found in {ref.registry} (HTTP 404)", status=404)
    if status in (401, 403):
        return RegistryError(f"{ref}: {ref.registry} denied access (HTTP {status})", status=status)
    temporary = status == 429 or status >= 500
    return RegistryError(
        f"{ref}: {ref.registry} answered HTTP {status} for the {what}", status=status, temporary=temporary
    )
