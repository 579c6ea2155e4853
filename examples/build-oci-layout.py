#!/usr/bin/env python3
"""Write examples/oci-named-user: a tiny OCI image layout whose image says ``USER memcache``.

Its one layer holds only /etc/passwd and /etc/group (memcache is 11211:11211), so
``mutator resolve oci:examples/oci-named-user`` and ``mutator review
examples/pod-oci.yaml`` show the real answer with no registry and no network.
The output is byte-for-byte reproducible: run it again and git sees no change.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

FILES = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nmemcache:x:11211:11211::/nonexistent:/usr/sbin/nologin\n",
    "etc/group": b"root:x:0:\nmemcache:x:11211:\n",
}


def _layer() -> tuple[bytes, str]:
    """The gzipped layer and the digest of its tar (the config's diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo("etc")
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        for name, content in FILES.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as out:
        out.write(raw.getvalue())
    return packed.getvalue(), "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()


def _blob(root: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _json(value: object) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"


def build(root: Path) -> None:
    layer, diff_id = _layer()
    config = {"architecture": "amd64", "os": "linux",
              "config": {"User": "memcache", "Cmd": ["/usr/bin/memcached"]},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           **_blob(root, _json(config))},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            **_blob(root, layer)}]}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                            **_blob(root, _json(manifest)),
                            "annotations": {"org.opencontainers.image.ref.name": "1.6"}}]}
    (root / "index.json").write_bytes(_json(index))
    (root / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("oci-named-user"))
