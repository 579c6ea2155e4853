"""``POST /warn/workloads[/{mode}]``: tell the developer at ``kubectl apply`` what will happen to the Pods.

Registered for Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and
CronJobs with ``failurePolicy: Ignore``: it never patches and never refuses,
it only answers ``allowed`` with warnings. The budget is short on purpose: a
cold image is answered "not checked yet" in time, and its lookup goes on into
the cache, so the Pods that follow admit warm.
"""

from __future__ import annotations

from mutator.decide import admission, feedback, workloads
from mutator.decide.admission import AdmissionReviewDoc, Review
from mutator.decide.policy import Mode
from mutator.resolve.resolver import Resolver
from mutator.serve import pipeline

# Seconds an apply waits for us at most, whatever the webhook's timeoutSeconds says.
BUDGET_SECONDS = 2.0


async def handle(review: Review, *, mode: Mode, resolver: Resolver, deadline: float) -> AdmissionReviewDoc:
    """Warnings for the workload in *review*; raises :class:`BadReview` when its object is malformed."""
    workload = workloads.from_review(review)
    target = workload.target if workload is not None else None
    if workload is None or target is None or not target.containers:
        return admission.respond(review.uid, allowed=True)
    pull = pipeline.pod_pull_context(workloads.pod_spec(review.object or {}, workload.kind),
                                     namespace=review.namespace or workload.namespace)
    judged = await pipeline.resolve_and_decide(target, mode=mode, resolver=resolver, deadline=deadline,
                                               pull=pull)
    return admission.respond(review.uid, allowed=True,
                             warnings=feedback.warnings(workload.label, judged.found, mode))
