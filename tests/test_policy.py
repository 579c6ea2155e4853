"""The decision, row by row, on pods made here (pure: no registry, no server)."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import jsonpatch
import pytest

from mutator.decide import admission
from mutator.decide.images import ImageFailure, ImageUser
from mutator.decide.passwd import MAX_ID
from mutator.decide.policy import Assessment as Finding
from mutator.decide.policy import Mode, check_ids, decide, images_to_resolve, patch_fields
from mutator.errors import UnsafePatch

NAMED = ImageUser("named", "r/named", "sha256:1", "app", uid=1000, gid=1001)
NAME_GROUP = ImageUser("namegroup", "r/ng", "sha256:2", "app:staff", uid=1000, gid=50)
NAME_GID0 = ImageUser("gid0", "r/g0", "sha256:3", "app", uid=1000, gid=0)
NUMERIC = ImageUser("numeric", "r/n", "sha256:4", "1234", uid=1234, gid=None)
UID_GROUPNAME = ImageUser("uidgroup", "r/ug", "sha256:5", "1000:staff", uid=1000, gid=50)
NO_USER = ImageUser("rootimg", "r/root", "sha256:6", "", uid=0, gid=0)
UID0 = ImageUser("uid0", "r/uid0", "sha256:7", "0", uid=0, gid=None)
NAME0 = ImageUser("toor", "r/toor", "sha256:8", "toor", uid=0, gid=0)
MISSING = ImageUser("ghost", "r/ghost", "sha256:9", "ghost", uid=None, gid=None,
                    problem="user 'ghost' not found: the image has no such user in /etc/passwd")
DOWN = ImageFailure("down", "cannot reach registry.example:5000", temporary=True)
BAD_REF = ImageFailure("BAD", "invalid image reference 'BAD'", temporary=False)
UID0_GROUP = ImageUser("uid0group", "r/u0g", "sha256:10", "0:1000", uid=0, gid=1000)
TOP = ImageUser("top", "r/top", "sha256:11", "top", uid=MAX_ID, gid=MAX_ID)
OVER = ImageUser("over", "r/over", "sha256:12", "over", uid=MAX_ID + 1, gid=1)  # never from passwd.py
OVER_GID = ImageUser("overgid", "r/og", "sha256:13", "app", uid=1000, gid=MAX_ID + 1)
NEGATIVE = ImageUser("negative", "r/neg", "sha256:14", "app", uid=-1, gid=1)
# USER 1000 in Arabic-Indic digits: the runtime looks it up as a *name*, found here as uid 1234
ARABIC = ImageUser("arabic", "r/ar", "sha256:15", "\u0661\u0660\u0660\u0660", uid=1234, gid=1234)
ALL = {i.image: i for i in (NAMED, NAME_GROUP, NAME_GID0, NUMERIC, UID_GROUPNAME, NO_USER, UID0,
                            NAME0, MISSING, DOWN, BAD_REF, UID0_GROUP, TOP, OVER, OVER_GID, NEGATIVE,
                            ARABIC)}


def pod(*containers: dict[str, Any], pod_sc: dict[str, Any] | None = None,
        init: list[dict[str, Any]] | None = None, ephemeral: list[dict[str, Any]] | None = None
        ) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers)}
    if pod_sc is not None:
        spec["securityContext"] = pod_sc
    if init:
        spec["initContainers"] = init
    if ephemeral:
        spec["ephemeralContainers"] = ephemeral
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}, "spec": spec}


def c(name: str, image: str, **sc: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": image}
    if sc:
        container["securityContext"] = sc
    return container


def run(pod_doc: dict[str, Any], mode: Mode = Mode.ENFORCE, resolutions=ALL):
    review = admission.validate(admission.review_for_pod(pod_doc))
    target = admission.target(review)
    decision = decide(target, resolutions, mode)
    patched = jsonpatch.apply_patch(pod_doc, decision.patch) if decision.allowed else None
    return decision, patched


def sc_of(patched: dict[str, Any], kind: str = "containers", index: int = 0) -> dict[str, Any] | None:
    return patched["spec"][kind][index].get("securityContext")


def test_named_user_is_patched_on_the_container_not_the_pod():
    original = pod(c("app", "named"), c("sidecar", "numeric"), pod_sc={"fsGroup": 2000})
    decision, patched = run(original)
    assert decision.allowed
    assert sc_of(patched) == {"runAsUser": 1000, "runAsGroup": 1001, "runAsNonRoot": True}
    assert sc_of(patched, index=1) is None  # the sidecar's numeric USER needs nothing
    assert patched["spec"]["securityContext"] == {"fsGroup": 2000}
    assert original["spec"]["containers"][0] == {"name": "app", "image": "named"}  # not mutated


def test_existing_security_context_keeps_its_fields():
    _, patched = run(pod(c("app", "named", allowPrivilegeEscalation=False)))
    assert sc_of(patched) == {
        "allowPrivilegeEscalation": False, "runAsUser": 1000, "runAsGroup": 1001, "runAsNonRoot": True,
    }


def test_null_security_context_is_replaced_whole():
    doc = pod({"name": "app", "image": "named", "securityContext": None})
    _, patched = run(doc)
    assert sc_of(patched) == {"runAsUser": 1000, "runAsGroup": 1001, "runAsNonRoot": True}


@pytest.mark.parametrize("mode", [Mode.ENFORCE, Mode.WARN, Mode.AUDIT])
def test_an_effective_run_as_user_means_no_lookup_and_no_patch(mode):
    for doc in (
        pod(c("app", "named", runAsUser=1500)),
        pod(c("app", "named"), pod_sc={"runAsUser": 1500}),
        pod(c("app", "rootimg", runAsUser=1500), pod_sc={"runAsUser": 0}),
    ):
        target = admission.target(admission.validate(admission.review_for_pod(doc)))
        assert images_to_resolve(target) == []
        decision, patched = run(doc, mode, resolutions={})
        assert decision.allowed and decision.patch == () and decision.warnings == ()
        assert patched == doc


def test_explicit_run_as_user_zero_is_root_even_over_a_pod_level_uid():
    decision, _ = run(pod(c("app", "named", runAsUser=0), pod_sc={"runAsUser": 1000}))
    assert not decision.allowed
    assert 'container "app"' in decision.message and "runAsUser: 0" in decision.message
    decision, _ = run(pod(c("app", "named"), pod_sc={"runAsUser": 0}))
    assert not decision.allowed


def test_pod_level_run_as_group_is_respected():
    _, patched = run(pod(c("app", "named"), pod_sc={"runAsGroup": 3000}))
    assert sc_of(patched) == {"runAsUser": 1000, "runAsNonRoot": True}
    _, patched = run(pod(c("app", "named", runAsGroup=3000)))
    assert sc_of(patched) == {"runAsGroup": 3000, "runAsUser": 1000, "runAsNonRoot": True}


def test_gid_zero_is_left_to_the_runtime():
    _, patched = run(pod(c("app", "gid0")))
    assert sc_of(patched) == {"runAsUser": 1000, "runAsNonRoot": True}


def test_name_group_and_uid_groupname():
    _, patched = run(pod(c("a", "namegroup"), c("b", "uidgroup")))
    assert sc_of(patched) == {"runAsUser": 1000, "runAsGroup": 50, "runAsNonRoot": True}
    assert sc_of(patched, index=1) is None  # numeric user part: the kubelet verifies it


def test_explicit_run_as_non_root_false_is_not_overwritten():
    decision, patched = run(pod(c("app", "named", runAsNonRoot=False)))
    assert sc_of(patched) == {"runAsNonRoot": False, "runAsUser": 1000, "runAsGroup": 1001}
    assert all(op["op"] == "add" for op in decision.patch)


@pytest.mark.parametrize(
    ("image", "found"),
    [
        ("rootimg", "its image sets no USER"),
        ("uid0", "its image sets USER '0'"),
        ("toor", "its image's USER 'toor' is uid 0 in its /etc/passwd"),
    ],
)
def test_root_images(image, found):
    doc = pod(c("web", image))
    decision, _ = run(doc, Mode.ENFORCE)
    assert not decision.allowed
    assert f'container "web" (image {image}) would run as root: {found}' in decision.message
    assert "put USER 1000 (any non-zero uid) in the Dockerfile" in decision.message
    assert "securityContext.runAsUser: 1000" in decision.message

    decision, patched = run(doc, Mode.WARN)
    assert decision.allowed and patched == doc
    assert decision.warnings[0].startswith(f'nonroot-mutator: container "web" ({image}) runs as root')
    assert decision.warnings[0].endswith("fix: USER 1000 or runAsUser: 1000")

    decision, patched = run(doc, Mode.AUDIT)
    assert decision.allowed and patched == doc
    assert decision.warnings[0].startswith(f'audit: would refuse container "web" ({image}) runs as root')


def test_unresolvable_user():
    decision, _ = run(pod(c("app", "ghost")))
    assert not decision.allowed
    assert "user 'ghost' not found" in decision.message and "cannot be verified" in decision.message
    decision, _ = run(pod(c("app", "BAD")))
    assert not decision.allowed and "invalid image reference" in decision.message
    decision, _ = run(pod(c("app", "ghost")), Mode.WARN)
    assert decision.allowed and 'container "app" (ghost) has an unverifiable user' in decision.warnings[0]


@pytest.mark.parametrize(("container", "in_full", "in_few_words"), [
    (c("a", "rootimg"), "put USER 1000 (any non-zero uid) in the Dockerfile, or set "
     "securityContext.runAsUser: 1000 (any non-zero uid)", "fix: USER 1000 or runAsUser: 1000"),
    (c("a", "named", runAsUser=0), "set a non-zero securityContext.runAsUser, or leave it unset "
     "for the image's USER", "fix: a non-zero runAsUser"),
    (c("a", "ghost"), "put a numeric USER (e.g. USER 1000:1000) in the Dockerfile, or set "
     "securityContext.runAsUser", "fix: a numeric USER or runAsUser"),
    (c("a", "named"), "or put USER 1000:1001 in the Dockerfile", "or Dockerfile USER 1000:1001"),
    (c("a", "down"), "", ""),
])
def test_each_outcome_says_what_to_change_in_full_and_in_a_warnings_few_words(container, in_full,
                                                                              in_few_words):
    """One rule gives both texts: the refusal says it in full, the warning in few words (a short
    container name, so that the audit hint fits)."""
    decision, _ = run(pod(container), Mode.AUDIT)
    (finding,) = decision.findings
    assert (finding.fix, finding.fix_short) == (in_full, in_few_words)
    (warning,) = decision.warnings
    assert warning.endswith(f"; {in_few_words}") if in_few_words else "fix" not in warning
    refused, _ = run(pod(container), Mode.ENFORCE)
    if finding.outcome in ("root", "unresolvable"):
        assert refused.message.endswith(f"; {in_full}")


def test_registry_failure_follows_the_mode():
    decision, _ = run(pod(c("app", "down")))
    assert not decision.allowed
    assert "temporary" in decision.message and "retried" in decision.message
    for mode in (Mode.WARN, Mode.AUDIT):
        decision, patched = run(pod(c("app", "down"), c("b", "named")), mode)
        assert decision.allowed
        assert any('container "app" (down) not checked (cannot reach' in w
                   for w in decision.warnings)
    # warn still patches what it could resolve
    decision, patched = run(pod(c("app", "down"), c("b", "named")), Mode.WARN)
    assert sc_of(patched, index=1)["runAsUser"] == 1000


def test_image_missing_from_resolutions_is_not_assumed_fine():
    decision, _ = run(pod(c("app", "named")), resolutions={})
    assert not decision.allowed


def test_audit_never_patches_but_says_what_enforce_would_do():
    doc = pod(c("app", "named"), c("db", "namegroup"))
    decision, patched = run(doc, Mode.AUDIT)
    assert decision.allowed and decision.patch == () and patched == doc
    assert decision.warnings == (
        'audit: would set runAsUser=1000 runAsGroup=1001 runAsNonRoot=true on container "app" (named)',
        'audit: would set runAsUser=1000 runAsGroup=50 runAsNonRoot=true on container "db" (namegroup)',
    )


def test_warn_patches_without_adding_run_as_non_root():
    _, patched = run(pod(c("app", "named")), Mode.WARN)
    assert sc_of(patched) == {"runAsUser": 1000, "runAsGroup": 1001}


def test_init_and_ephemeral_containers_are_patched_in_place():
    doc = pod(c("app", "numeric"), init=[c("setup", "named")], ephemeral=[c("debug", "namegroup")])
    decision, patched = run(doc)
    assert sc_of(patched, "initContainers")["runAsUser"] == 1000
    assert sc_of(patched, "ephemeralContainers") == {
        "runAsUser": 1000, "runAsGroup": 50, "runAsNonRoot": True,
    }
    assert sc_of(patched) is None
    assert dict(decision.outcomes) == {"setup": "patch", "app": "skip", "debug": "patch"}


def test_root_init_container_refuses_the_pod():
    decision, _ = run(pod(c("app", "named"), init=[c("chown", "rootimg")]))
    assert not decision.allowed and 'container "chown"' in decision.message


def test_every_problem_is_named_in_one_message():
    decision, _ = run(pod(c("a", "rootimg"), c("b", "ghost"), c("c", "named")))
    assert 'container "a"' in decision.message and 'container "b"' in decision.message
    assert 'container "c"' not in decision.message


@pytest.mark.parametrize("mode", list(Mode))
def test_reinvocation_yields_no_further_patch(mode):
    doc = pod(c("app", "named"), c("s", "namegroup", readOnlyRootFilesystem=True),
              init=[c("i", "named")])
    first, patched = run(doc, mode)
    second, again = run(patched, mode)
    assert second.patch == () and again == patched
    if mode is not Mode.AUDIT:
        assert first.patch


def test_windows_pods_are_left_alone():
    doc = pod(c("app", "rootimg"))
    doc["spec"]["os"] = {"name": "windows"}
    decision = admission.target(admission.validate(admission.review_for_pod(doc)))
    assert decision is None


@pytest.mark.parametrize("mode", list(Mode))
def test_never_patches_root_nor_removes_anything(mode):
    """Every combination of image and security context: only adds, never uid 0."""
    contexts = [None, {}, {"runAsNonRoot": True}, {"runAsNonRoot": False}, {"runAsUser": 0},
                {"runAsGroup": 0}]
    pod_contexts = [None, {}, {"runAsNonRoot": True}, {"runAsUser": 0}, {"runAsGroup": 7}]
    for image, sc, psc in itertools.product(ALL, contexts, pod_contexts):
        container = {"name": "x", "image": image}
        if sc is not None:
            container["securityContext"] = copy.deepcopy(sc)
        decision, patched = run(pod(container, pod_sc=copy.deepcopy(psc)), mode)
        for op in decision.patch:
            assert op["op"] == "add"
            value = op["value"]
            assert value != 0 or not op["path"].endswith("runAsUser")
            if isinstance(value, dict):
                assert value.get("runAsUser") != 0
        if patched is not None:
            result = patched["spec"]["containers"][0].get("securityContext") or {}
            if sc and "runAsNonRoot" in sc:
                assert result["runAsNonRoot"] == sc["runAsNonRoot"]
            effective = result.get("runAsUser", (psc or {}).get("runAsUser"))
            if mode is Mode.ENFORCE:
                assert effective != 0


@pytest.mark.parametrize("mode", list(Mode))
def test_user_zero_with_a_group_is_root(mode):
    # USER 0:1000 runs as uid 0 whatever the group: refused in enforce, never patched anywhere.
    decision, _ = run(pod(c("web", "uid0group")), mode)
    assert decision.patch == ()
    assert decision.findings[0].outcome == "root"
    if mode is Mode.ENFORCE:
        assert not decision.allowed and "its image sets USER '0:1000'" in decision.message
    else:
        assert "runs as root" in decision.warnings[0]


def test_the_top_of_the_id_range_is_patched():
    _, patched = run(pod(c("app", "top")))
    assert sc_of(patched) == {"runAsUser": 2147483647, "runAsGroup": 2147483647, "runAsNonRoot": True}


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("image", ["over", "overgid", "negative"])
def test_ids_outside_the_range_are_never_patched(mode, image):
    # The resolver never yields these; the policy refuses them anyway (defence in depth).
    decision, _ = run(pod(c("app", image), c("ok", "named")), mode)
    assert decision.findings[0].outcome == "unresolvable"
    assert "not in" in decision.findings[0].detail
    for op in decision.patch:
        assert op["path"].startswith("/spec/containers/1/")
    assert decision.allowed is (mode is not Mode.ENFORCE)


@pytest.mark.parametrize(("uid", "gid"), [(0, None), (-1, None), (MAX_ID + 1, None), (None, None),
                                          (True, None), (1000.0, None), ("1000", None), (1000, -1),
                                          (1000, MAX_ID + 1), (1000, "50")])
def test_check_ids_is_a_typed_guard(uid, gid):
    with pytest.raises(UnsafePatch):
        check_ids(uid, gid)
    container = admission.Container("containers", "x", "img", "/spec/containers/0", None)
    with pytest.raises(UnsafePatch):
        patch_fields(Finding(container, "patch", uid=uid, gid=gid), None, Mode.ENFORCE)


def test_check_ids_accepts_the_whole_range():
    for uid, gid in ((1, None), (1, 0), (MAX_ID, MAX_ID), (1000, 1000)):
        check_ids(uid, gid)


def test_non_ascii_digits_are_a_name_and_patched_with_what_passwd_said():
    # The kubelet cannot verify a non-numeric user, so the resolved uid must be patched, not skipped.
    _, patched = run(pod(c("app", "arabic")))
    assert sc_of(patched) == {"runAsUser": 1234, "runAsGroup": 1234, "runAsNonRoot": True}


@pytest.mark.parametrize("problem", ["rootimg", "ghost", "down", "over"])
def test_a_refusal_carries_no_patch(problem):
    """Other containers resolved and would be patched, but a denial never carries a patch."""
    doc = pod(c("a", "named"), c("b", problem), init=[c("i", "namegroup")])
    decision, _ = run(doc)
    assert not decision.allowed
    assert decision.patch == ()
    assert [f.outcome for f in decision.findings].count("patch") == 2
    response = admission.respond("u", allowed=decision.allowed, patch=decision.patch,
                                 message=decision.message)["response"]
    assert "patch" not in response and "patchType" not in response


@pytest.mark.parametrize(
    ("container_sc", "pod_sc"),
    [(None, None), ({}, {"runAsGroup": 7}), ({"runAsGroup": 9}, None), ({"runAsNonRoot": False}, None),
     ({"runAsNonRoot": True}, None), (None, {"runAsNonRoot": True}), ({"runAsGroup": 0}, None)],
)
@pytest.mark.parametrize("image", ["named", "namegroup", "gid0", "top"])
def test_audit_says_exactly_what_enforce_would_do(container_sc, pod_sc, image):
    container = {"name": "app", "image": image}
    if container_sc is not None:
        container["securityContext"] = dict(container_sc)
    doc = pod(container, pod_sc=pod_sc)
    _, patched = run(doc, Mode.ENFORCE)
    added = {k: v for k, v in (sc_of(patched) or {}).items() if k not in (container_sc or {})}
    audited, _ = run(doc, Mode.AUDIT)
    said = audited.warnings[0].split("would set ", 1)[1].split(" on container", 1)[0]
    expected = " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in added.items())
    assert said == expected


@pytest.mark.parametrize(("image", "line"), [("named", "USER 1000:1001"), ("namegroup", "USER 1000:50"),
                                             ("gid0", "USER 1000:0"), ("top", "USER 2147483647:2147483647")])
def test_findings_carry_the_numeric_dockerfile_line(image, line):
    decision, _ = run(pod(c("app", image)), Mode.AUDIT)
    (finding,) = decision.findings
    assert (finding.name, finding.image, finding.outcome, finding.dockerfile) == ("app", image, "patch", line)
    assert finding.user == ALL[image].user and finding.uid == ALL[image].uid


def test_audit_hint_names_the_dockerfile_line_when_it_fits():
    decision, _ = run(pod(c("a", "named")), Mode.AUDIT)
    assert decision.warnings[0].endswith("; or Dockerfile USER 1000:1001")


@pytest.mark.parametrize("image", ["rootimg", "uid0", "toor", "uid0group"])
def test_refusals_of_root_images_name_a_numeric_user_line_and_the_run_as_user_alternative(image):
    decision, _ = run(pod(c("web", image)))
    assert "put USER 1000 (any non-zero uid) in the Dockerfile" in decision.message
    assert "or set securityContext.runAsUser: 1000" in decision.message
    finding = decision.findings[0]
    assert finding.outcome == "root" and finding.dockerfile is None  # no exact line: any non-zero uid


NAMES = ["web", "a" * 63, "x" * 200, "\u00e9t\u00e9-caf\u00e9", "\u6f22\u5b57" * 20]
IMAGES = ["nginx", "registry.corp.example:5000/team/project/very-long-service-name:v1.2.3-rc1",
          "r.example/" + "p" * 150 + ":t", "127.0.0.1:5000/a@sha256:" + "0" * 64]


@pytest.mark.parametrize("mode", [Mode.WARN, Mode.AUDIT])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("image", IMAGES)
def test_warnings_are_written_to_fit_not_clipped(mode, name, image):
    """Every warning fits 120 characters and keeps the verdict and the fix whole."""
    resolutions = {image: ImageUser(image, "r", "d", "", uid=0, gid=0)}
    decision, _ = run(pod(c(name, image)), mode, resolutions)
    (warning,) = decision.warnings
    assert len(warning) <= 120
    assert "runs as root" in warning and warning.endswith("fix: USER 1000 or runAsUser: 1000")
    if len(name) <= 40:
        assert f'container "{name}"' in warning
        if len(image) <= 40 and len(name) <= 20:
            assert f"({image})" in warning  # short images are never elided
    else:  # only a name this long is elided, keeping both of its ends
        assert f'container "{name[:8]}' in warning and f'{name[-8:]}"' in warning and "…" in warning
    sent = admission.respond("u", allowed=True, warnings=decision.warnings)["response"]["warnings"]
    assert sent == [warning]
