"""The sandbox (pause) image, built offline from the kubernetes source kube.sh already unpacked.

``build/pause/linux/pause.c`` is compiled statically (glibc's static libc from libc6-dev) with the flags of
its own Makefile, and packed as a one-layer OCI image archive that ``ctr images import`` reads. Both are
cached beside the kubelet, keyed by the source's hash, so a warm run only imports the archive.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

from tests.support.images import OCI_CONFIG, OCI_MANIFEST, Blob, encode, sha256

TAG = "3.4"  # build/pause/Makefile's TAG in 1.20.2
# The name containerd's CRI `sandbox_image` points at; the image is imported, never pulled.
IMAGE = f"nonroot-mutator.test/pause:{TAG}"


def source(kube_cache: Path) -> Path:
    return kube_cache / "src" / "build" / "pause" / "linux" / "pause.c"


def archive(kube_cache: Path) -> Path:
    """The OCI archive of the pause image, built if its cached copy is missing or stale."""
    pause_c = source(kube_cache)
    if not pause_c.is_file():
        raise RuntimeError(f"{pause_c} is missing: kube.sh unpacks the kubernetes source there")
    key = hashlib.sha256(pause_c.read_bytes()).hexdigest()[:16]
    out = kube_cache / "pause" / key
    tar = out / "pause-oci.tar"
    if tar.is_file():
        return tar
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is not installed (apt: gcc libc6-dev), needed to build the pause binary")
    out.mkdir(parents=True, exist_ok=True)
    binary = out / "pause"
    result = subprocess.run(
        [gcc, "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{TAG}-nonroot-mutator", "-o", str(binary),
         str(pause_c)], capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"gcc -static {pause_c} failed: {result.stderr.strip()}")
    tmp = tar.with_suffix(".tmp")
    tmp.write_bytes(_oci_archive(binary.read_bytes()))
    tmp.rename(tar)
    return tar


def _oci_archive(pause: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as layer_tar:
        info = tarfile.TarInfo("pause")
        info.size, info.mode = len(pause), 0o755
        layer_tar.addfile(info, io.BytesIO(pause))
    layer = encode(raw.getvalue())
    config = Blob(OCI_CONFIG, json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }).encode())
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
                           "layers": [layer.descriptor()]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
        "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": TAG},
    }]}).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        entries = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
        blobs = (layer.data, config.data, manifest)
        entries.update({"blobs/sha256/" + sha256(b).split(":")[1]: b for b in blobs})
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
