"""The seed's failure, reproduced by the kubelet itself, and fixed by the webhook with the kernel's uid.

A Pod with ``runAsNonRoot: true`` and a ``USER app`` image: the kubelet cannot verify a name and refuses
to create the container. In an ``enforce`` namespace the webhook writes the uid and gid it read from the
image's /etc/passwd and /etc/group, and the process containerd and runc start has exactly those ids.
"""

from __future__ import annotations

import pytest

from . import images, pods
from .node import Node

PATCHED = [image for image in images.seeds() if image.uid is not None]


def test_without_the_webhook_the_kubelet_refuses_a_named_user(node: Node, namespaces, seed_images):
    namespace = namespaces["none"]  # the webhook never sees this namespace
    stored = pods.create(node, namespace, pods.pod("seed", seed_images["named"], node=node, non_root=True))
    assert pods.security_context(stored) == {}  # nothing patched
    result = pods.outcome(node, namespace, "seed")
    assert result.reason == "CreateContainerConfigError"
    assert ("container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root"
            in result.message)


def test_with_the_webhook_in_enforce_the_same_pod_runs(node: Node, namespaces, seed_images):
    namespace = namespaces["enforce"]
    stored = pods.create(node, namespace, pods.pod("seed", seed_images["named"], node=node, non_root=True))
    assert pods.security_context(stored) == {"runAsUser": 1201, "runAsGroup": 1202, "runAsNonRoot": True}
    result = pods.outcome(node, namespace, "seed")
    assert result.ids == {"Uid": [1201] * 4, "Gid": [1202] * 4, "Groups": [1202]}
    # The container's own `id`, as the kubelet logged it: busybox finds the name in the image's passwd.
    log = pods.container_log(node, namespace, "seed")
    assert "uid=1201(app) gid=1202(app)" in log


@pytest.mark.parametrize("image", PATCHED, ids=[image.name for image in PATCHED])
def test_the_process_runs_as_the_uid_we_resolved(node: Node, namespaces, seed_images, image):
    namespace = namespaces["enforce"]
    name = f"ids-{image.name}"
    stored = pods.create(node, namespace, pods.pod(name, seed_images[image.name], node=node))
    patched = pods.security_context(stored)
    assert (patched.get("runAsUser"), patched.get("runAsGroup")) == (image.uid, image.gid)  # the passwd's
    result = pods.outcome(node, namespace, name)
    assert (result.uid, result.gid) == (patched["runAsUser"], patched["runAsGroup"])  # the kernel's
    assert result.ids is not None and set(result.ids["Uid"]) == {image.uid}  # real, effective, saved, fs
