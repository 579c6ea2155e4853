"""Runtime fidelity: for the resolver tests' images, containerd's own uid for a Pod is the uid we patch.

Each image runs twice: unpatched, without ``runAsNonRoot``, in a namespace the webhook never sees (so
containerd resolves the USER itself, through the kubelet), and in an ``enforce`` namespace with our patch.
The uid the first process has, the runAsUser we stored, and the uid the second process has must agree.
For the USERs we refuse on purpose the unpatched run shows what the node would have done instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.images import Pusher
from tests.support.rootfs_images import Case

from . import images, pods
from .node import Node
from .pods import Outcome

CORPUS = images.corpus()
REFUSED = images.refused_on_purpose()


@dataclass
class Run:
    image: str  # reference
    user: str
    unpatched: Outcome
    patched: Outcome | None  # None: refused at admission
    refusal: str = ""


def _row(name: str, run: Run) -> str:
    context = pods.security_context(run.patched.pod) if run.patched else {}
    ran = f"{run.patched.uid}:{run.patched.gid}" if run.patched and run.patched.ids else "-"
    node = f"{run.unpatched.uid}:{run.unpatched.gid}" if run.unpatched.ids else run.unpatched.reason
    patched = f"{context.get('runAsUser')}:{context.get('runAsGroup')}" if context else "refused"
    return f"| {name} | `{run.user}` | {node} | {patched} | {ran} |"


@pytest.fixture(scope="module")
def runs(node: Node, namespaces: dict[str, str], pusher: Pusher) -> Iterator[dict[str, Run]]:
    """Every image of the corpus started both ways at once (the kubelet starts them in parallel)."""
    refs = {case.name: images.push(pusher, f"corpus/{case.name}", case.user, case.layers) for case in CORPUS}
    refs |= {image.name: images.push(pusher, f"corpus/{image.name}", image.user, image.layers)
             for image in REFUSED}
    users = {case.name: case.user for case in CORPUS} | {image.name: str(image.user) for image in REFUSED}
    refusals: dict[str, str] = {}
    for name, ref in refs.items():
        pods.create(node, namespaces["none"], pods.pod(name, ref, node=node))
        if name in {image.name for image in REFUSED}:
            refusals[name] = pods.refused(node, namespaces["enforce"], pods.pod(name, ref, node=node))
        else:
            pods.create(node, namespaces["enforce"], pods.pod(name, ref, node=node))
    found = {name: Run(ref, users[name], pods.outcome(node, namespaces["none"], name),
                       None if name in refusals else pods.outcome(node, namespaces["enforce"], name),
                       refusals.get(name, "")) for name, ref in refs.items()}
    table = ["| image | USER | uid:gid containerd ran it as | uid:gid we patched | uid:gid it then ran as |",
             "|---|---|---|---|---|", *(_row(name, run) for name, run in found.items())]
    print("\nnode corpus:\n" + "\n".join(table), file=sys.stderr)
    yield found


def test_the_corpus_is_large_enough():
    assert len(CORPUS) >= 10
    shapes = {"link": "link-chain", "opaque and whiteouts": "many-layers", "zstd": "zstd",
              "group part": "zstd-under-gzip", "middle layer": "link-target-replaced"}
    assert set(shapes.values()) <= {case.name for case in CORPUS}, shapes


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_containerd_runs_the_uid_we_patch(runs: dict[str, Run], case: Case):
    run = runs[case.name]
    assert run.unpatched.ids is not None, f"{run.unpatched.reason}: {run.unpatched.message}"
    assert run.patched is not None and run.patched.ids is not None
    patched = pods.security_context(run.patched.pod)
    assert run.unpatched.uid == patched["runAsUser"] == run.patched.uid == case.uid
    assert patched["runAsGroup"] == run.patched.gid == case.gid
    if ":" in case.user:
        # The kubelet passes the image's user to the runtime without its group part (it keeps only what
        # it can check), so containerd gives the passwd's primary group; our runAsGroup keeps the group.
        assert run.unpatched.gid == case.uid  # these images give each user the primary group uid
    else:
        assert run.unpatched.gid == case.gid


@pytest.mark.parametrize("image", REFUSED, ids=[image.name for image in REFUSED])
def test_what_we_refuse_on_purpose_the_node_would_run_as_root(runs: dict[str, Run], image):
    run = runs[image.name]
    assert 'admission webhook "enforce.nonroot-mutator.dev" denied the request' in run.refusal
    assert run.unpatched.ids is not None, f"{run.unpatched.reason}: {run.unpatched.message}"
    assert run.unpatched.uid == 0, run.unpatched.ids
