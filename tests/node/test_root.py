"""Root stays out: what we refuse at admission is what the kubelet would refuse later, in its own words."""

from __future__ import annotations

import pytest

from . import images, pods
from .node import Node

ROOT = [image for image in images.seeds() if image.uid is None]
REASONS = {"no-user": "its image sets no USER", "uid-zero": "", "user-root": "", "name-to-root": ""}


@pytest.mark.parametrize("image", ROOT, ids=[image.name for image in ROOT])
def test_enforce_refuses_a_root_image_at_admission(node: Node, namespaces, seed_images, image):
    reference = seed_images[image.name]
    stderr = pods.refused(node, namespaces["enforce"], pods.pod(f"root-{image.name}", reference, node=node))
    assert 'admission webhook "enforce.nonroot-mutator.dev" denied the request' in stderr
    assert f'container "app" (image {reference}) would run as root' in stderr
    assert REASONS[image.name] in stderr


@pytest.mark.parametrize("image", ROOT, ids=[image.name for image in ROOT])
def test_warn_admits_a_root_image_and_the_kubelet_refuses_it(node: Node, namespaces, seed_images, image):
    namespace, name = namespaces["warn"], f"root-{image.name}"
    stored = pods.create(node, namespace, pods.pod(name, seed_images[image.name], node=node, non_root=True))
    assert pods.security_context(stored) == {}  # admitted, nothing to patch
    result = pods.outcome(node, namespace, name)
    assert result.reason == "CreateContainerConfigError"
    if image.user is None or image.user.isdigit():
        assert "container has runAsNonRoot and image will run as root" in result.message
    else:  # a name, even `root`: the kubelet cannot tell it is root, and still refuses
        assert f"image has non-numeric user ({image.user}), cannot verify user is non-root" in result.message
