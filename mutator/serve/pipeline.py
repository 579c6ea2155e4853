"""One admission, start to end: review in → containers → image users → decision → review out.

:func:`admit` is the whole path a ``/mutate/{mode}`` body takes (the decisions
memo first, else decode, decide, evidence, and the memo keeps the answer);
:func:`handle` is its decide step, which ``mutator review`` runs on an
AdmissionReview so that the offline check a developer runs is exactly what the
cluster runs. :func:`resolve_and_decide` is the core the workload warnings share;
``mutator review`` of manifests and ``mutator report`` resolve in bulk and share
its pure half (:func:`mutator.decide.findings.decided`). ``review`` has no
cluster, so it resolves with the node-wide credentials only; ``report`` passes
each Pod's :func:`pod_pull_context`, as the admission does.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from mutator import logs, metrics
from mutator.decide import admission, evidence, findings, policy
from mutator.decide.admission import AdmissionReviewDoc, Review
from mutator.decide.findings import Finding
from mutator.decide.images import ImageFailure, Resolution
from mutator.decide.policy import Decision, Mode, Result
from mutator.errors import BadReview
from mutator.resolve.registry.authn.credentials import PullContext
from mutator.resolve.resolver import Resolver
from mutator.serve.memo import Decided, Memo, Seen, encoded

log = logging.getLogger(__name__)

UNREADABLE = "request could not be read (internal error, logged)"


class Outcome(NamedTuple):
    """One admission's answer, ready to send: its JSON, what it is counted as, its log line.

    Plain fields, all made where the answer is (a memo hit copies them from the
    decision): the server reads them without calling back into the pipeline. A
    named tuple, as :class:`~mutator.decide.admission.Review` is: one per admission.
    """

    review: Review
    decision: Decision | None  # None: the request was not ours to change (or deciding failed)
    body: bytes  # the answer's JSON, as the server sends it
    result: Result
    found: tuple[Finding, ...] = ()  # per container, for the log line
    failed: bool = False  # deciding failed on a bug: *body* is the mode's failure policy
    line: logs.AdmissionLine | None = None  # what to log; None for a plain allow
    document: AdmissionReviewDoc | None = None  # the answer as a document, where it was made as one

    @property
    def response(self) -> AdmissionReviewDoc:
        """The answer as a document (for the commands and tests that read it)."""
        if self.document is not None:
            return self.document
        document: AdmissionReviewDoc = orjson.loads(self.body)
        return document


def _outcome(review: Review, decision: Decision | None, response: AdmissionReviewDoc, *,
             found: tuple[Finding, ...] = (), failed: bool = False,
             line: logs.AdmissionLine | None = None) -> Outcome:
    try:
        body = orjson.dumps(response)
    except TypeError:  # a lone surrogate (a manifest read by ``mutator review``): escaped, as JSON allows
        body = json.dumps(response).encode()
    return Outcome(review, decision, body, _result(decision, failed=failed), found, failed, line, response)


def _result(decision: Decision | None, *, failed: bool = False) -> Result:
    if failed:
        return "error"
    if decision is None:
        return "allowed"
    if not decision.allowed:
        return "refused"
    return "patched" if decision.patch else "allowed"


async def admit(body: bytes, *, mode: Mode, resolver: Resolver, api_timeout: float,
                memo: Memo | None = None) -> Outcome:
    """The answer to the body of a ``/mutate/{mode}`` request: the one path every Pod takes.

    *api_timeout* is the seconds the API server waits (see :func:`deadline_for`). With
    *memo*, a Pod decided before is answered from it, without the resolver while
    the memo trusts it (:meth:`Memo.trusted`), else once the resolver confirms
    the answers it was decided on (:func:`_confirmed`); any other Pod is decoded
    and decided (:func:`handle`), and the decision kept for the Pods that repeat
    it. Raises :class:`BadReview` when the review cannot be read (an HTTP 400: the
    request is wrong, or unreadable through a bug, logged); a bug while deciding
    is logged and answered by the mode's failure policy (``Outcome.failed``),
    never raised.

    The memo hit is written inline, calling only the memo: it is the warm path.
    """
    seen: Seen | None = None
    if memo is not None:
        try:
            seen = memo.seen(body, mode)
        except Exception:  # a bug: logged in full, answered as unreadable
            log.exception("internal error deciding on review uid=?")
            metrics.ADMISSIONS.labels(mode, "error").inc()
            raise BadReview(UNREADABLE) from None
        if seen is not None:
            known = memo.get(seen.key)
            if known is not None and memo.trusted(known, epoch=resolver.epoch):
                memo.hit(known)
                return Outcome(known.review(seen), known.decision, known.answer(seen.uid),
                               known.result, known.found, False, known.line)
    review: Review | None = None
    try:
        deadline = deadline_for(api_timeout)
        if seen is not None and memo is not None:
            known = await _confirmed(seen, resolver=resolver, memo=memo, deadline=deadline)
            if known is not None:
                return known
        review = _read(body)
        return await handle(review, mode=mode, resolver=resolver, deadline=deadline,
                            memo=memo, key=seen.key if seen is not None else None)
    except BadReview:
        raise
    except Exception:  # a bug: logged in full, answered by the mode's failure policy
        uid = review.uid if review is not None else seen.uid if seen is not None else "?"
        log.exception("internal error deciding on review uid=%s", uid)
        metrics.ADMISSIONS.labels(mode, "error").inc()
        if review is None:
            raise BadReview(UNREADABLE) from None
        return _outcome(review, None, internal_error(review, mode=mode), failed=True)


def _read(body: bytes) -> Review:
    """The validated Pod review in *body*; any fault reading it is a :class:`BadReview` (a 400)."""
    try:
        return admission.decode(body, resources=admission.PODS)
    except BadReview:
        raise
    except Exception:  # a bug: logged in full, never a 500 with a traceback
        log.exception("internal error reading a review")
        raise BadReview(UNREADABLE) from None


async def _confirmed(seen: Seen, *, resolver: Resolver, memo: Memo, deadline: float) -> Outcome | None:
    """The answer to a Pod decided before, if the resolver still gives the answers it was decided on.

    ``None``: decide it with :func:`handle`. The resolver is asked as for any Pod
    (its caches, its access checks), so nothing is reused that it would now answer
    differently: see :mod:`mutator.serve.memo`.
    """
    known = memo.get(seen.key)
    if known is None:
        return None
    epoch = resolver.epoch  # before the answers are read: a clear() meanwhile is a new epoch
    resolutions = (await resolver.resolve(known.images, deadline=deadline, pull=known.pull)
                   if known.images else {})
    if not known.still_holds(resolutions):
        return None
    known = memo.confirmed(seen.key, known, epoch=epoch, reusable=resolver.reusable(known.resolutions))
    memo.hit(known)
    return Outcome(known.review(seen), known.decision, known.answer(seen.uid),
                   known.result, known.found, False, known.line)


async def handle(review: Review, *, mode: Mode, resolver: Resolver, deadline: float,
                 memo: Memo | None = None, key: Hashable = None) -> Outcome:
    """Decide on a validated review; raises :class:`BadReview` if its object is malformed.

    *deadline* is in ``loop.time()`` terms: image lookups still running then
    count as temporary failures, so the answer always leaves in time. With
    *memo* and the *key* :func:`mutator.serve.memo.envelope` gave this review, the
    decision is kept for the Pods that repeat it.
    """
    target = admission.target(review)
    if target is None or not target.containers:
        notes = evidence.audit_annotations([], mode=mode.value, result="untouched")
        return _outcome(review, None, admission.respond(review.uid, allowed=True, audit_annotations=notes))
    pull = pull_context(review)
    # read before the answers are: a clear() meanwhile is a new epoch, and ends the memo's trust
    epoch = resolver.epoch if memo is not None and key is not None else 0
    judged = await resolve_and_decide(target, mode=mode, resolver=resolver, deadline=deadline, pull=pull)
    images, resolutions, decision, found = judged.images, judged.resolutions, judged.decision, judged.found
    if any(isinstance(r, ImageFailure) and r.past_deadline for r in resolutions.values()):
        _deadline_counter(mode).inc()
    counters = tuple(_container_counter(mode, outcome) for _, outcome in decision.outcomes)
    for counter in counters:
        counter.inc()
    patch = list(decision.patch)
    if patch and review.operation == "CREATE" and not review.sub_resource:
        # Only a Pod CREATE stores metadata we may add to; subresource updates ignore it.
        metadata = (review.object or {}).get("metadata")
        patch += evidence.annotation_ops(metadata, [f for f in found if f.outcome == "patch"])
    result = _result(decision)
    response = admission.respond(
        review.uid,
        allowed=decision.allowed,
        patch=patch,
        warnings=decision.warnings,
        message=decision.message,
        audit_annotations=evidence.audit_annotations(found, mode=mode.value, result=result),
    )
    line = logs.admission_line(review=review, mode=mode.value, result=result, allowed=decision.allowed,
                               message=decision.message, warnings=decision.warnings, found=found)
    outcome = _outcome(review, decision, response, found=found, line=line)
    if memo is not None and key is not None:
        head, tail = encoded(response)
        answers = tuple(resolutions[i] for i in images)
        memo.keep(key, Decided(images, pull, answers, decision, found, head, tail, line, counters,
                               outcome.result, review.namespace, review.name, epoch,
                               memo.trust_until(reusable=resolver.reusable(answers))))
    return outcome


@dataclass(frozen=True, slots=True)
class Judged:
    """What one pod spec met: the images looked up, their answers, the decision and its findings."""

    images: tuple[str, ...]
    resolutions: Mapping[str, Resolution]
    decision: Decision
    found: tuple[Finding, ...]


async def resolve_and_decide(target: admission.Target, *, mode: Mode, resolver: Resolver,
                             deadline: float, pull: PullContext) -> Judged:
    """Look up the images of *target* with *pull*'s credentials, then decide: the Pod routes'
    and the workload warnings' core (the CLI resolves in bulk, then shares the pure half,
    :func:`mutator.decide.findings.decided`)."""
    images = tuple(policy.images_to_resolve(target))
    resolutions = await resolver.resolve(images, deadline=deadline, pull=pull) if images else {}
    decision, found = findings.decided(target, resolutions, mode)
    return Judged(images, resolutions, decision, found)


def internal_error(review: Review, *, mode: Mode) -> AdmissionReviewDoc:
    """The answer when deciding failed on a bug: the mode's failure policy, said in one line.

    Never an HTTP 500 with a traceback: enforce refuses (as ``failurePolicy: Fail``
    would), warn and audit allow with a warning (as ``Ignore`` would).
    """
    reason = "nonroot-mutator could not decide on this pod (internal error, logged); retry"
    if mode is Mode.ENFORCE:
        return admission.respond(review.uid, allowed=False, code=500, message=reason)
    return admission.respond(review.uid, allowed=True, warnings=[reason])


def pull_context(review: Review) -> PullContext:
    """Whose pull credentials apply: the Pod's namespace, ``imagePullSecrets`` and ServiceAccount.

    v1.20's ``pods/ephemeralcontainers`` update carries no pod spec, so there the
    Pod's secrets are unknown (``service_account`` empty): only node-wide sources apply.
    """
    obj = review.object if isinstance(review.object, Mapping) else {}
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    namespace = review.namespace or _text(metadata.get("namespace"))
    return pod_pull_context(obj.get("spec") if review.kind == "Pod" else None, namespace=namespace)


def pod_pull_context(spec: Any, *, namespace: str) -> PullContext:
    """The pull credentials a pod spec names (a Pod's, or a workload's template), in *namespace*.

    Shared by the Pod routes, the workload warnings, ``mutator report`` and the
    warm-up, so that a Deployment is told, a report shows and the warm-up reads
    exactly what its Pods will meet: the same secrets, the same ServiceAccount.
    """
    if not isinstance(spec, Mapping):
        return PullContext(namespace=namespace, pull_secrets=(), service_account="")
    entries = spec.get("imagePullSecrets")
    names = tuple(dict.fromkeys(  # in order, once each
        entry["name"] for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, Mapping) and _text(entry.get("name"))
    ))
    # serviceAccount is the deprecated spelling the API server still fills in
    account = _text(spec.get("serviceAccountName")) or _text(spec.get("serviceAccount")) or "default"
    return PullContext(namespace=namespace, pull_secrets=names, service_account=account)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


@functools.cache
def _deadline_counter(mode: Mode) -> Any:
    """Admissions answered while a lookup was still running: the registry is slower than the API server."""
    return metrics.DEADLINE_EXPIRED.labels(mode.value)


@functools.cache
def _container_counter(mode: Mode, outcome: str) -> Any:
    """Bound once per (mode, outcome): the warm path counts every container."""
    return metrics.CONTAINERS.labels(mode.value, outcome)


def deadline_for(timeout: float, *, loop: asyncio.AbstractEventLoop | None = None) -> float:
    """Leave a margin before the API server's own timeout, for the answer to travel.

    A caller that knows its *loop* passes it: ``get_running_loop()`` checks the
    process id with a system call, every time.
    """
    margin = max(0.25, min(1.0, timeout * 0.1))
    return (loop or asyncio.get_running_loop()).time() + max(0.05, timeout - margin)
