"""Images on disk: an OCI image layout (``oci:DIR[:REF]``) or a ``docker save`` archive
(``docker-archive:FILE[:REF]``), as ``skopeo`` names them.

Read through the same code as a registry image: :class:`LocalImages` is a
:class:`~mutator.resolve.registry.client.RegistryClient` whose manifests and blobs come
from files, so the index walk (platform choice), the layer scan and the merged
tree that find ``/etc/passwd`` are the registry path's own. Every blob is
checked against its digest as it is read, as a downloaded one is.

A layout or archive that cannot be opened is :class:`~mutator.errors.BadInput`
(the command's input is wrong); a blob that is damaged is a ``RegistryError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from mutator.errors import BadInput, InvalidReference, RegistryError
from mutator.resolve.registry import reference
from mutator.resolve.registry.client import (
    DOCKER_MANIFEST,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryClient,
    _json_object,
)
from mutator.resolve.registry.content import CHUNK_BYTES, BlobStream, Descriptor, Image, verify
from mutator.resolve.registry.reference import Reference
from mutator.resolve.registry.settings import PlatformSpec

OCI, DOCKER_ARCHIVE = "oci:", "docker-archive:"
TRANSPORTS = (OCI, DOCKER_ARCHIVE)
REF_NAME = "org.opencontainers.image.ref.name"  # the tag skopeo and buildah write in index.json
DOCKER_CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
INDEX_FILE = "index.json"


def is_local(image: str) -> bool:
    return image.startswith(TRANSPORTS)


@dataclass(frozen=True, slots=True)
class LocalReference(Reference):
    """Where the image is on disk; shown as the user wrote it (``oci:DIR:REF``)."""

    text: str = ""

    def __str__(self) -> str:
        return self.text


class _Files:
    """The files of a layout directory or of an archive, by their path inside it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._members: dict[str, tuple[int, int]] | None = None  # archive: name → (offset, size)
        if os.path.isdir(path):
            return
        try:  # uncompressed only: blobs are read in place, at their offset in the file
            with tarfile.open(path, "r:") as archive:
                members = {m.name.removeprefix("./"): m for m in archive.getmembers()}
        except OSError as exc:
            raise BadInput(f"{path}: {exc.strerror or exc}") from None
        except tarfile.TarError:
            raise BadInput(f"{path}: not a directory or an uncompressed tar archive "
                           "(a docker save | gzip needs gunzip first)") from None
        self._members = {}
        for name, member in members.items():
            target = member
            if member.issym():  # docker save links a layer shared by two images
                target = members.get(os.path.normpath(os.path.join(os.path.dirname(name), member.linkname)))
            if target is not None and target.isfile():
                self._members[name] = (target.offset_data, target.size)

    def exists(self, name: str) -> bool:
        if self._members is not None:
            return name in self._members
        return os.path.isfile(os.path.join(self.path, name))

    def size(self, name: str) -> int:
        if self._members is not None:
            return self._members[name][1]
        return os.path.getsize(os.path.join(self.path, name))

    def _open(self, name: str) -> tuple[Any, int]:
        if not self.exists(name):
            raise RegistryError(f"{self.path}: {name} is missing")
        if self._members is None:
            return open(os.path.join(self.path, name), "rb"), self.size(name)
        offset, size = self._members[name]
        handle = open(self.path, "rb")  # noqa: SIM115 - closed by callers
        handle.seek(offset)
        return handle, size

    def read(self, name: str, *, limit: int) -> bytes:
        handle, size = self._open(name)
        with handle:
            if size > limit:
                raise RegistryError(f"{self.path}: {name} is {size} bytes, over the {limit} byte limit")
            return handle.read(size)

    async def chunks(self, name: str) -> AsyncIterator[bytes]:
        handle, left = self._open(name)
        with handle:
            while left > 0:
                chunk = handle.read(min(CHUNK_BYTES, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise BadInput(f"{what} is not JSON") from None


def _split(rest: str) -> tuple[str, str | None]:
    """``PATH[:REF]``: the shortest prefix that exists is the path (a tag such as ``app:v1`` has colons)."""
    for at in (i for i, c in enumerate(rest) if c == ":"):
        if os.path.exists(rest[:at]):
            return rest[:at], rest[at + 1:] or None
    return rest, None


def _same_tag(name: str, tag: Any) -> bool:
    """*name* as typed (``app:v1``, ``v1``) against a RepoTags entry (``docker.io/library/app:v1``)."""
    if not isinstance(tag, str):
        return False
    if name == tag or (tag.endswith(f":{name}") and ":" not in name):
        return True
    try:
        return str(reference.parse(name)) == str(reference.parse(tag))
    except InvalidReference:
        return False


def open_all(images: Iterable[str]) -> dict[str, LocalImages]:
    """The layouts and archives among *images*, opened; one that cannot be is :class:`BadInput`."""
    return {image: LocalImages(image) for image in images if is_local(image)}


def _blob_name(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


class LocalImages(RegistryClient):
    """One image of a layout or archive, read the way :class:`RegistryClient` reads a registry's."""

    def __init__(self, text: str) -> None:  # no session, transport or credentials: nothing is fetched
        transport = OCI if text.startswith(OCI) else DOCKER_ARCHIVE
        path, name = _split(text[len(transport):])
        if not os.path.exists(path):
            raise BadInput(f"{text}: no such {'directory' if transport == OCI else 'file'} {path}")
        self._files = _Files(path)
        repository = os.path.basename(path.rstrip("/")) or "image"
        self.reference = LocalReference("local", repository, name, text=text)
        self._documents: dict[str, tuple[str, dict[str, Any]]] = {}  # synthesized manifests by digest
        self._names: dict[str, str] = {}  # blob digest → file, where not blobs/ALG/HEX
        if self._files.exists(INDEX_FILE):
            self._top = self._from_index(text, name)
        elif self._files.exists("manifest.json"):
            self._top = self._from_docker_manifest(text, name)
        else:
            raise BadInput(f"{text}: neither an OCI image layout (no {INDEX_FILE}) "
                           "nor a docker save archive (no manifest.json)")

    def _from_index(self, text: str, name: str | None) -> str:
        raw = self._files.read(INDEX_FILE, limit=MAX_MANIFEST_BYTES)
        index = _json(raw, f"{text}: {INDEX_FILE}")
        entries = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(entries, list) or not entries:
            raise BadInput(f"{text}: {INDEX_FILE} lists no images")
        names = [(e.get("annotations") or {}).get(REF_NAME) for e in entries if isinstance(e, dict)]
        if name is not None:
            chosen = [e for e, n in zip(entries, names, strict=False) if n == name]
            if not chosen:
                known = ", ".join(sorted(str(n) for n in names if n)) or "none"
                raise BadInput(f"{text}: no image named {name!r} in {INDEX_FILE} (names: {known})")
            entries = chosen[:1]
        if len(entries) == 1:
            return Descriptor.from_json(entries[0], what=f"{text}: {INDEX_FILE} entry").digest
        # several unnamed images: index.json is the index, and the platform chooses, as from a registry
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        self._documents[digest] = (OCI_INDEX, {**index, "manifests": entries})
        return digest

    def _from_docker_manifest(self, text: str, name: str | None) -> str:
        listing = _json(self._files.read("manifest.json", limit=MAX_MANIFEST_BYTES), f"{text}: manifest.json")
        images = [i for i in listing if isinstance(i, dict)] if isinstance(listing, list) else []
        if name is not None:
            images = [i for i in images if any(_same_tag(name, tag) for tag in (i.get("RepoTags") or ()))]
        if len(images) != 1:
            tags = sorted(t for i in listing if isinstance(i, dict) for t in (i.get("RepoTags") or ()))
            raise BadInput(f"{text}: {'no' if not images else 'more than one'} image"
                           f"{f' named {name!r}' if name else ''} in manifest.json; name one as "
                           f"{DOCKER_ARCHIVE}{self._files.path}:TAG (tags: {', '.join(tags) or 'none'})")
        entry = images[0]
        config_name, layer_names = entry.get("Config"), entry.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layer_names, list) \
                or not all(isinstance(n, str) and self._files.exists(n) for n in layer_names) \
                or not self._files.exists(config_name):
            raise BadInput(f"{text}: manifest.json names a config or layers the archive does not hold")
        raw_config = self._files.read(config_name, limit=MAX_CONFIG_BYTES)
        config = _json(raw_config, f"{text}: {config_name}")
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") if isinstance(config, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layer_names):
            raise BadInput(f"{text}: the image config's rootfs.diff_ids do not match its layers")
        config_digest = "sha256:" + hashlib.sha256(raw_config).hexdigest()
        self._names[config_digest] = config_name
        layers = []
        for diff_id, layer_name in zip(diff_ids, layer_names, strict=True):
            self._names[str(diff_id)] = layer_name
            # "": the layer's first bytes tell tar from gzip, as docker save writes either
            layers.append({"mediaType": "", "digest": diff_id, "size": self._files.size(layer_name)})
        manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                    "config": {"mediaType": DOCKER_CONFIG_TYPE, "digest": config_digest,
                               "size": len(raw_config)},
                    "layers": layers}
        digest = "sha256:" + hashlib.sha256(json.dumps(manifest).encode()).hexdigest()
        self._documents[digest] = (DOCKER_MANIFEST, manifest)
        return digest

    def _file(self, digest: str) -> str:
        return self._names.get(digest) or _blob_name(digest)

    async def resolve_tag(self, ref: Reference) -> str | None:
        return self._top

    async def manifest(self, ref: Reference, identifier: str) -> tuple[str, str, dict[str, Any]]:
        if identifier in self._documents:
            media_type, document = self._documents[identifier]
            return media_type, identifier, document
        raw = self._files.read(_blob_name(identifier), limit=MAX_MANIFEST_BYTES)
        verify(identifier, raw)
        document = _json_object(raw, what=f"manifest {identifier} of {ref}")
        media_type = document.get("mediaType") or (OCI_INDEX if "manifests" in document else "")
        return media_type or OCI_MANIFEST, identifier, document

    async def config(self, ref: Reference, descriptor: Descriptor) -> dict[str, Any]:
        raw = self._files.read(self._file(descriptor.digest), limit=MAX_CONFIG_BYTES)
        verify(descriptor.digest, raw)
        return _json_object(raw, what=f"config of {ref}")

    @asynccontextmanager
    async def blob(self, ref: Reference, descriptor: Descriptor) -> AsyncIterator[BlobStream]:
        yield BlobStream(self._files.chunks(self._file(descriptor.digest)), descriptor)

    async def image(self, ref: Reference, platform: PlatformSpec, *,
                    manifest: tuple[str, str, dict[str, Any]] | None = None) -> Image:
        return await super().image(self.reference, platform, manifest=manifest)
