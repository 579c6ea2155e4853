"""The AdmissionReviews a real kube-apiserver (v1.20.2) sent, kept in tests/fixtures/admission."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

ADMISSION = Path(__file__).resolve().parents[1] / "fixtures" / "admission"


def review(name: str) -> dict[str, Any]:
    path = ADMISSION / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"fixture {path} is missing")
    return json.loads(path.read_text())


def with_images(document: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    """A copy whose container images are replaced (public names → loopback registry images)."""
    document = copy.deepcopy(document)

    def swap(holder: Any) -> None:
        if not isinstance(holder, dict):
            return
        for kind in ("initContainers", "containers", "ephemeralContainers"):
            for container in holder.get(kind) or []:
                if container.get("image") in images:
                    container["image"] = images[container["image"]]

    for key in ("object", "oldObject"):
        obj = document["request"].get(key)
        if isinstance(obj, dict):
            swap(obj.get("spec"))
            swap(obj)
    return document
