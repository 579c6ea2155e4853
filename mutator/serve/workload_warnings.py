"""``POST /warn/workloads[/{mode}]``: tell the developer at ``kubectl apply`` what will happen to the Pods.

Registered for Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and
CronJobs with ``failurePolicy: Ignore``: it never patches and never refuses,
it only answers ``allowed`` with warnings. The budget is short on purpose: a
cold image is answered "not checked yet" in time, and its lookup goes on into
the cache, so the Pods that follow admit warm.
"""

from __future__ import annotations

from mutator.decide import admission, feedback, findings, policy, workloads
from mutator.decide.admission import AdmissionReviewDoc, Review
from mutator.decide.policy import Mode
from mutator.resolve.resolver import Resolver
from mutator.serve import pipeline as webhook

# Seconds an apply waits for us at most, whatever the webhook's timeoutSeconds says.
BUDGET_SECONDS = 2.0


async def handle(review: Review, *, mode: Mode, resolver: Resolver, deadline: float) -> AdmissionReviewDoc:
    """Warnings for the workload in *review*; raises :class:`BadReview` when its object is malformed."""
    workload = workloads.from_review(review)
    target = workload.target if workload is not None else None
    if workload is None or target is None or not target.containers:
        return admission.respond(review.uid, allowed=True)
    images = policy.images_to_resolve(target)
    pull = webhook.pod_pull_context(workloads.pod_spec(review.object or {}, workload.kind),
                                    namespace=review.namespace or workload.namespace)
    resolutions = await resolver.resolve(images, deadline=deadline, pull=pull) if images else {}
    decision = policy.decide(target, resolutions, mode)
    found = findings.collect(target, resolutions, decision)
    return admission.respond(review.uid, allowed=True,
                             warnings=feedback.warnings(workload.label, found, mode))
