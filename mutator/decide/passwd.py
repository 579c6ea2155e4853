"""``/etc/passwd`` and ``/etc/group`` read the way the node reads them, and a ``USER`` spec resolved.

The node is containerd (``oci.WithUser``) parsing the image's files with
moby's ``user`` package. Its quirks matter, because the uid we patch must be
the uid the container would have run as, and never a different one:

- ``USER`` is split on the first ``:``; a part that ``strconv.Atoi`` reads
  (ASCII digits, optional sign) and that lies in 0..2147483647 is an id, any
  other part is a *name* looked up in the image's files. Non-ASCII digits
  (Arabic-Indic or fullwidth ``USER 1000``) fail ``Atoi`` and are therefore names, here too.
- A digits-only part outside 0..2147483647 was looked up as a *name* until
  CVE-2026-46680, so a crafted passwd line named ``4294967296`` made it root.
  We refuse such a part outright and never look it up.
- passwd lines are split on ``\\n`` only, trimmed of Go's white space, and split
  on ``:``; the first line whose name field equals the name wins (as
  ``getpwnam``). Comments and NIS ``+``/``-`` lines get no special meaning in
  passwd (moby skips ``#`` lines in group only), so they are just lines whose
  name starts with that character.
- An id field goes through ``Atoi`` with the error ignored and is then cast to
  ``uint32``: ``abc``, an empty or a missing field become **0**, and
  ``4294967296`` wraps to **0**. We never reproduce that: a lookup that hits a
  line whose uid or gid field is not a plain ASCII decimal in 0..2147483647 (the
  API server's limit) is unresolvable, with the line named.
- moby reads passwd with ``bufio.Scanner``'s 64 KiB line limit (group: 1 MiB);
  a longer line anywhere stops the parse with an error and the container does
  not start. We say so instead of reading on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from mutator.errors import InvalidAccountEntry, InvalidUserSpec, UserNotFound

MAX_ID = 2**31 - 1  # the API server's limit for runAsUser/runAsGroup, and runc's (math.MaxInt32)
PASSWD_MAX_LINE = 64 * 1024 - 1  # bufio.MaxScanTokenSize, the line and its "\n" must fit
GROUP_MAX_LINE = 1024 * 1024 - 1  # moby/sys/user raises the group scanner's buffer to 1 MiB

_ATOI = re.compile(r"[+-]?[0-9]+")  # strconv.Atoi's base-10 syntax; [0-9] is ASCII only, unlike \d
_PLAIN = re.compile(rb"[0-9]+")
_ASCII_SPACE = b" \t\n\v\f\r"
# unicode.IsSpace, which Go's bytes.TrimSpace uses (Python's str.strip() also strips \x1c-\x1f).
_GO_SPACE = " \t\n\v\f\r\x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + (
    "\u2028\u2029\u202f\u205f\u3000"
)
_PREVIEW = 60


def _atoi(text: str) -> int | None:
    """Go's ``strconv.Atoi``: ``None`` on a syntax error, clamped to int64 on a range error.

    Never builds a huge int from a long run of digits.
    """
    if not _ATOI.fullmatch(text):
        return None
    digits = text.lstrip("+-").lstrip("0") or "0"
    value = int(digits) if len(digits) <= 19 else 2**63
    value = -value if text.startswith("-") else value
    return max(-(2**63), min(2**63 - 1, value))


def _spec_id(text: str) -> int | None:
    value = _atoi(text)
    return value if value is not None and 0 <= value <= MAX_ID else None


@dataclass(frozen=True, slots=True)
class UserSpec:
    """The image config's ``USER`` split the way the runtimes split it."""

    user: str
    group: str | None

    @property
    def user_id(self) -> int | None:
        return _spec_id(self.user)

    @property
    def group_id(self) -> int | None:
        return None if self.group is None else _spec_id(self.group)

    @property
    def user_is_numeric(self) -> bool:
        return self.user_id is not None

    @property
    def group_is_numeric(self) -> bool:
        return self.group_id is not None

    @property
    def problem(self) -> str | None:
        """Why the spec is invalid: a number outside the id range, which must never become a name."""
        for what, part in (("user", self.user), ("group", self.group)):
            if part is not None and _atoi(part) is not None and _spec_id(part) is None:
                shown = part if len(part) <= 24 else part[:20] + "…"
                return (f"USER {what} part {shown!r} is a number outside 0..{MAX_ID}: invalid, "
                        "and never looked up as a name")
        return None

    @property
    def needs_files(self) -> bool:
        """True when the image's passwd or group must be read to know the ids."""
        if self.problem is not None:
            return False
        return not self.user_is_numeric or (self.group is not None and not self.group_is_numeric)


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


def _trim(line: bytes) -> bytes:
    """Go's ``bytes.TrimSpace``: ASCII white space, and Unicode white space when the line has any."""
    line = line.strip(_ASCII_SPACE)
    if line and (line[0] >= 0x80 or line[-1] >= 0x80):
        line = line.decode("utf-8", "surrogateescape").strip(_GO_SPACE).encode("utf-8", "surrogateescape")
    return line


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    fields: list[bytes]

    def preview(self) -> str:
        text = b":".join(self.fields).decode("utf-8", "replace")
        return repr(text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…")


def _check_line_lengths(data: bytes, *, path: str, max_line: int) -> None:
    """Raise if any line is longer than the node's scanner holds (anywhere: it stops the whole parse).

    Jumps by up to *max_line* bytes at a time: a window with a newline in it
    holds only short lines, so a 4 MiB file takes a few dozen C-level searches.
    """
    start, size = 0, len(data)
    while size - start > max_line:
        newline = data.rfind(b"\n", start, start + max_line + 1)
        if newline < 0:
            end = data.find(b"\n", start)
            length = (size if end < 0 else end) - start
            number = data.count(b"\n", 0, start) + 1
            raise InvalidAccountEntry(
                f"line {number} of {path} is {length} bytes long: the node's "
                f"parser stops at {max_line + 1} bytes and the container would not start"
            )
        start = newline + 1


def _parse(raw: bytes, *, comments: bool) -> list[bytes] | None:
    """One line's fields as moby sees them; ``None`` for a line it skips (blank, or a group comment)."""
    line = _trim(raw[:-1] if raw.endswith(b"\r") else raw)  # bufio.ScanLines drops a final "\r"
    if not line or (comments and line.startswith(b"#")):
        return None
    return line.split(b":")


def _lines(data: bytes, *, comments: bool) -> Iterator[_Line]:
    """Every line moby's scanner yields, in order (lengths are checked apart)."""
    start, number, size = 0, 0, len(data)
    while start < size:
        end = data.find(b"\n", start)
        if end < 0:
            end = size
        number += 1
        fields = _parse(data[start:end], comments=comments)
        start = end + 1
        if fields is not None:
            yield _Line(number, fields)


# Bytes that may precede and follow a name field that equals the wanted name: the line's edges,
# the white space trimmed around it (ASCII, or the last/first byte of a Unicode space), and ":".
_BEFORE_NAME = frozenset(b"\n \t\v\f\r") | frozenset(range(0x80, 0x100))
_AFTER_NAME = _BEFORE_NAME | {ord(":")}


def _named(data: bytes, wanted: bytes, *, comments: bool) -> _Line | None:
    """The first line whose name field is *wanted*, parsing only lines where it could be."""
    start, size, width = 0, len(data), len(wanted)
    while (hit := data.find(wanted, start)) >= 0:
        before = data[hit - 1] if hit else 0x0A
        after = data[hit + width] if hit + width < size else 0x0A
        if before not in _BEFORE_NAME or after not in _AFTER_NAME:
            start = hit + 1
            continue
        line_start = data.rfind(b"\n", 0, hit) + 1
        line_end = data.find(b"\n", hit)
        line_end = size if line_end < 0 else line_end
        fields = _parse(data[line_start:line_end], comments=comments)
        if fields is not None and fields[0] == wanted:
            return _Line(data.count(b"\n", 0, line_start) + 1, fields)
        start = line_end + 1
    return None


def _go_int(field: bytes | None) -> int:
    """What moby makes of an id field: ``Atoi`` with its error ignored (a bad field is 0)."""
    if field is None:
        return 0
    return _atoi(field.decode("ascii", "replace")) or 0


def _node_id(field: bytes | None) -> int:
    """The id containerd then runs with: moby's value cast to ``uint32`` (4294967296 → 0)."""
    return _go_int(field) & 0xFFFFFFFF


def _checked_id(line: _Line, index: int, what: str, path: str) -> int:
    """A plain ASCII decimal id in 0..MAX_ID, or :class:`InvalidAccountEntry` naming the line."""
    field = line.fields[index] if index < len(line.fields) else None
    if field is not None and _PLAIN.fullmatch(field):
        digits = field.lstrip(b"0") or b"0"
        if len(digits) <= 10 and int(digits) <= MAX_ID:
            return int(digits)
    if field is None:
        shown = f"has no {what} field"
    else:
        text = field.decode("utf-8", "replace")
        shown = f"has {what} field {(text if len(text) <= 24 else text[:20] + '…')!r}"
    raise InvalidAccountEntry(
        f"line {line.number} of {path} ({line.preview()}) {shown}, not an id in 0..{MAX_ID}: "
        f"the node would use {what} {_node_id(field)}"
    )


def _first(data: bytes, *, path: str, max_line: int, comments: bool, name: str | None = None,
           uid: int | None = None) -> _Line | None:
    """The first line matching *name* (or whose uid field the node reads as *uid*).

    Line lengths are checked over the whole file first, as the node's parse fails on
    a long line wherever it is. Time and memory stay linear in the file's size.
    """
    _check_line_lengths(data, path=path, max_line=max_line)
    if name is not None:
        return _named(data, name.encode("utf-8", "surrogateescape"), comments=comments)
    for line in _lines(data, comments=comments):
        if _go_int(line.fields[2] if len(line.fields) > 2 else None) == uid:
            return line
    return None


def _named_line(data: bytes | None, what: str, name: str, *, path: str, max_line: int,
                comments: bool) -> _Line:
    """The line of the file at *path* naming *name* (a *what*); *data* ``None``: the image lacks the file."""
    line = _first(data or b"", path=path, max_line=max_line, comments=comments, name=name)
    if line is None:
        where = f"has no {path}" if data is None else f"has no such {what} in {path}"
        raise UserNotFound(f"{what} {name!r} not found: the image {where}")
    return line


def resolve(spec: UserSpec, *, passwd: bytes | None, group: bytes | None) -> Identity:
    """Resolve *spec* against the image's files to the ids the runtime would use.

    ``passwd``/``group`` are the merged files' contents, ``None`` when the image
    has no such file. Raises :class:`~mutator.errors.InvalidUserSpec` for a
    number out of range, :class:`UserNotFound` for a name the files lack and
    :class:`InvalidAccountEntry` for a line the node would misread.
    """
    problem = spec.problem
    if problem is not None:
        raise InvalidUserSpec(problem)
    uid = spec.user_id
    primary_gid: int | None = None
    if uid is None:
        line = _named_line(passwd, "user", spec.user, path="/etc/passwd", max_line=PASSWD_MAX_LINE,
                           comments=False)
        uid = _checked_id(line, 2, "uid", "/etc/passwd")
        primary_gid = _checked_id(line, 3, "gid", "/etc/passwd")
    elif spec.group is None and passwd is not None:
        line = _first(passwd, path="/etc/passwd", max_line=PASSWD_MAX_LINE, comments=False, uid=uid)
        if line is not None:
            _checked_id(line, 2, "uid", "/etc/passwd")
            primary_gid = _checked_id(line, 3, "gid", "/etc/passwd")

    if spec.group is None:
        return Identity(uid=uid, gid=primary_gid)
    gid = spec.group_id
    if gid is None:
        entry = _named_line(group, "group", spec.group, path="/etc/group", max_line=GROUP_MAX_LINE,
                            comments=True)
        gid = _checked_id(entry, 2, "gid", "/etc/group")
    return Identity(uid=uid, gid=gid)
