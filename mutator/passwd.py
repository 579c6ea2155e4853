"""``/etc/passwd`` and ``/etc/group`` parsing, and resolution of a ``USER`` spec.

The semantics follow what runc and crun do when they start a container whose
config says ``USER spec``: the part before ``:`` is the user, the part after it
the group; a number is taken as-is, a name is looked up in the image's own
files, first match wins (as ``getpwnam`` does). Without a group part the user's
primary gid from passwd applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from mutator.errors import UserNotFound

MAX_ID = 2**32 - 2  # (uid_t)-1 is "no change" for setuid(2) and never a real id


@dataclass(frozen=True, slots=True)
class UserSpec:
    """The image config's ``USER`` split the way the runtimes split it."""

    user: str
    group: str | None

    @property
    def user_is_numeric(self) -> bool:
        return _as_id(self.user) is not None

    @property
    def group_is_numeric(self) -> bool:
        return self.group is not None and _as_id(self.group) is not None


@dataclass(frozen=True, slots=True)
class Identity:
    uid: int
    gid: int | None


@lru_cache(maxsize=4096)  # called for every container of every admission, on few distinct values
def split_user(spec: str) -> UserSpec | None:
    """Split ``user[:group]``; ``None`` when the image sets no user (it runs as root).

    The kubelet and containerd take everything before the first ``:`` as the
    user; an empty user part (``USER :1000``) is as good as no user at all.
    """
    user, sep, group = spec.partition(":")
    if not user:
        return None
    return UserSpec(user=user, group=group if sep and group else None)


def _as_id(text: str) -> int | None:
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def _records(data: bytes, fields: int) -> list[list[str]]:
    rows = []
    for raw in data.decode("utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "+", "-")):
            continue
        parts = line.split(":")
        if len(parts) < fields:
            continue
        rows.append(parts)
    return rows


def parse_passwd(data: bytes) -> dict[str, Identity]:
    """Map user name → uid/gid; malformed lines are skipped, the first entry of a name wins."""
    users: dict[str, Identity] = {}
    for parts in _records(data, 4):
        uid, gid = _as_id(parts[2]), _as_id(parts[3])
        if parts[0] and uid is not None and parts[0] not in users:
            users[parts[0]] = Identity(uid=uid, gid=gid)
    return users


def parse_group(data: bytes) -> dict[str, int]:
    """Map group name → gid; malformed lines are skipped, the first entry of a name wins."""
    groups: dict[str, int] = {}
    for parts in _records(data, 3):
        gid = _as_id(parts[2])
        if parts[0] and gid is not None and parts[0] not in groups:
            groups[parts[0]] = gid
    return groups


def resolve(spec: UserSpec, *, passwd: bytes | None, group: bytes | None) -> Identity:
    """Resolve *spec* against the image's files to the ids the runtime would use.

    ``passwd``/``group`` are the merged files' contents, ``None`` when the image
    has no such file. Raises :class:`UserNotFound` for a name the files lack.
    """
    uid = _as_id(spec.user)
    primary_gid: int | None = None
    if uid is None:
        users = parse_passwd(passwd or b"")
        entry = users.get(spec.user)
        if entry is None:
            where = "has no /etc/passwd" if passwd is None else "has no such user in /etc/passwd"
            raise UserNotFound(f"user {spec.user!r} not found: the image {where}")
        uid, primary_gid = entry.uid, entry.gid
    else:
        primary_gid = next((e.gid for e in parse_passwd(passwd or b"").values() if e.uid == uid), None)

    if spec.group is None:
        return Identity(uid=uid, gid=primary_gid)
    gid = _as_id(spec.group)
    if gid is None:
        gid = parse_group(group or b"").get(spec.group)
        if gid is None:
            where = "has no /etc/group" if group is None else "has no such group in /etc/group"
            raise UserNotFound(f"group {spec.group!r} not found: the image {where}")
    return Identity(uid=uid, gid=gid)
