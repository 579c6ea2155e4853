"""Images built by the tests themselves: tar + gzip + JSON, pushed over the registry HTTP API."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import ssl
import tarfile
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes
    diff_id: str = ""  # for layers: the digest of the uncompressed tar

    @property
    def digest(self) -> str:
        return sha256(self.data)

    def descriptor(self, media_type: str | None = None) -> dict[str, object]:
        return {"mediaType": media_type or self.media_type, "digest": self.digest, "size": len(self.data)}


@dataclass(frozen=True)
class Pushed:
    """A manifest as stored: what an index entry or a pull by digest needs."""

    reference: str  # HOST/REPO:TAG
    digest: str
    size: int
    media_type: str

    @property
    def by_digest(self) -> str:
        return f"{self.reference.rsplit(':', 1)[0]}@{self.digest}"


def layer(
    files: Mapping[str, bytes] | None = None,
    *,
    whiteouts: Sequence[str] = (),
    opaque: Sequence[str] = (),
    symlinks: Mapping[str, str] | None = None,
    hardlinks: Mapping[str, str] | None = None,
    special: Mapping[str, bytes] | None = None,
    raw: Sequence[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = (),
    padding_files: int = 0,
    compress: bool | str = True,
    end_marker: bool = True,
) -> Blob:
    """A layer tar: *files* by path, ``.wh.`` entries for *whiteouts*, opaque markers for dirs.

    *padding_files* adds files of incompressible bytes before everything else,
    to make a layer whose interesting entries sit far into the stream.
    *hardlinks* maps a path to the path it links to (written after the files);
    *special* maps a path to a tar type (``tarfile.FIFOTYPE``, ``CHRTYPE``…);
    *raw* entries are written last exactly as given (names untouched, no parent
    directories added). *compress* is True/``"gzip"``, ``"zstd"`` or False (plain
    tar); *end_marker* False drops the two zero blocks that end a tar.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        seen_dirs: set[str] = set()

        def add_dirs(path: str) -> None:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                directory = "/".join(parts[:i])
                if directory not in seen_dirs:
                    seen_dirs.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)

        def add_file(path: str, data: bytes) -> None:
            add_dirs(path)
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

        def add_link(path: str, kind: bytes, target: str = "") -> None:
            add_dirs(path)
            info = tarfile.TarInfo(path)
            info.type, info.linkname, info.mode = kind, target, 0o644
            tar.addfile(info)

        for i in range(padding_files):
            add_file(f"usr/share/filler/{i}.bin", hashlib.sha512(str(i).encode()).digest() * 2048)
        for directory in opaque:
            add_file(f"{directory}/.wh..wh..opq", b"")
        for path in whiteouts:
            head, _, base = path.rpartition("/")
            add_file(f"{head}/.wh.{base}" if head else f".wh.{base}", b"")
        for path, data in (files or {}).items():
            add_file(path, data)
        for path, target in (symlinks or {}).items():
            add_link(path, tarfile.SYMTYPE, target)
        for path, target in (hardlinks or {}).items():
            add_link(path, tarfile.LNKTYPE, target)
        for path, kind in (special or {}).items():
            add_link(path, kind)
        for item in raw:
            info, data = item if isinstance(item, tuple) else (item, b"")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
        body = buffer.getvalue()  # entries are written as added; close() appends the end marker
    return encode(buffer.getvalue() if end_marker else body, compress)


def encode(raw_tar: bytes, compress: bool | str = True) -> Blob:
    """A layer blob of an uncompressed tar: gzip (True/"gzip"), "zstd", or plain (False)."""
    if compress is False:
        return Blob(OCI_LAYER_TAR, raw_tar, sha256(raw_tar))
    if compress == "zstd":
        import zstandard

        return Blob(OCI_LAYER_ZSTD, zstandard.ZstdCompressor().compress(raw_tar), sha256(raw_tar))
    return Blob(OCI_LAYER_GZIP, gzip.compress(raw_tar, mtime=0), sha256(raw_tar))


def passwd(*entries: tuple[str, int, int]) -> bytes:
    lines = ["root:x:0:0:root:/root:/bin/sh"]
    lines += [f"{name}:x:{uid}:{gid}::/home/{name}:/bin/sh" for name, uid, gid in entries]
    return ("\n".join(lines) + "\n").encode()


def group(*entries: tuple[str, int]) -> bytes:
    lines = ["root:x:0:"] + [f"{name}:x:{gid}:" for name, gid in entries]
    return ("\n".join(lines) + "\n").encode()


class Pusher:
    """Pushes blobs, manifests and indexes to one registry over its HTTP API."""

    def __init__(self, base_url: str, *, context: ssl.SSLContext | None = None,
                 authorization: str | None = None) -> None:
        self.base_url = base_url
        self.host = urllib.parse.urlsplit(base_url).netloc
        self._context = context
        self._authorization = authorization  # an Authorization header for a registry that wants one

    def _request(self, method: str, url: str, *, data: bytes | None = None,
                 headers: Mapping[str, str] | None = None) -> tuple[int, Mapping[str, str]]:
        headers = dict(headers or {})
        if self._authorization:
            headers["Authorization"] = self._authorization
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=30, context=self._context) as response:
            return response.status, response.headers

    def blob(self, repository: str, blob: Blob) -> None:
        status, headers = self._request("POST", f"{self.base_url}/v2/{repository}/blobs/uploads/")
        assert status == 202, status
        location = urllib.parse.urljoin(self.base_url, headers["Location"])
        separator = "&" if "?" in location else "?"
        status, _ = self._request(
            "PUT", f"{location}{separator}digest={blob.digest}", data=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert status == 201, status

    def manifest(self, repository: str, tag: str, document: Mapping[str, object], media_type: str) -> Pushed:
        raw = json.dumps(document).encode()
        status, _ = self._request(
            "PUT", f"{self.base_url}/v2/{repository}/manifests/{tag}", data=raw,
            headers={"Content-Type": media_type},
        )
        assert status == 201, status
        return Pushed(f"{self.host}/{repository}:{tag}", sha256(raw), len(raw), media_type)

    def image(
        self,
        repository: str,
        tag: str,
        *,
        user: str | None,
        layers: Sequence[Blob],
        docker: bool = False,
        os: str = "linux",
        architecture: str = "amd64",
    ) -> Pushed:
        """Push layers, a config whose ``config.User`` is *user* (None: no key), and the manifest."""
        container_config: dict[str, object] = {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]}
        if user is not None:
            container_config["User"] = user
        config = Blob(
            DOCKER_CONFIG if docker else OCI_CONFIG,
            json.dumps({
                "architecture": architecture,
                "os": os,
                "config": container_config,
                "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in layers]},
            }).encode(),
        )
        for blob in (*layers, config):
            self.blob(repository, blob)
        media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        document = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": config.descriptor(),
            "layers": [b.descriptor(DOCKER_LAYER if docker else None) for b in layers],
        }
        return self.manifest(repository, tag, document, media_type)

    def index(self, repository: str, tag: str, entries: Sequence[tuple[Pushed, Mapping[str, str]]],
              *, docker: bool = False) -> Pushed:
        media_type = DOCKER_LIST if docker else OCI_INDEX
        document = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [
                {"mediaType": p.media_type, "digest": p.digest, "size": p.size, "platform": dict(platform)}
                for p, platform in entries
            ],
        }
        return self.manifest(repository, tag, document, media_type)
