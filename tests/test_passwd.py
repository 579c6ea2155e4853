"""USER specs and the image's passwd/group, read as the node reads them (pure).

"The node" below is containerd's ``oci.WithUser`` with moby's ``user`` parser
(``/usr/share/gocode/src/github.com/containerd/containerd/oci/spec_opts.go``,
``moby/sys/user/user.go``). Each test says what the node does and what we do.
"""

from __future__ import annotations

import time
import tracemalloc

import pytest

from mutator.decide.passwd import MAX_ID, Identity, resolve, split_user
from mutator.errors import InvalidAccountEntry, InvalidUserSpec, UnresolvableUser, UserNotFound

PASSWD = b"""root:x:0:0:root:/root:/bin/sh
app:x:1000:1001:App:/home/app:/bin/sh
app:x:2000:2000:shadowed duplicate:/:/bin/false
node:x:1000:1000::/home/node:/bin/sh
"""
ARABIC = "\u0661\u0660\u0660\u0660"  # 1000 in Arabic-Indic digits: str.isdigit() and int() accept it
FULLWIDTH = "\uff11\uff10\uff10\uff10"  # 1000 in fullwidth digits
MONGOLIAN = "\u1811\u1810\u1810\u1810"
GROUP = b"root:x:0:\nstaff:x:50:app\napp:x:1001:\nstaff:x:60:\n"


def lookup(spec: str, passwd: bytes | None = PASSWD, group: bytes | None = GROUP) -> Identity:
    parsed = split_user(spec)
    assert parsed is not None
    return resolve(parsed, passwd=passwd, group=group)


def test_split_user_follows_the_runtimes():
    assert split_user("") is None
    assert split_user(":1000") is None
    assert split_user("app") == split_user("app:")
    spec = split_user("app:staff")
    assert (spec.user, spec.group) == ("app", "staff")
    assert split_user("1000:50").user_is_numeric and split_user("1000:50").group_is_numeric
    assert not split_user("app:50").user_is_numeric


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("app", Identity(1000, 1001)),
        ("app:staff", Identity(1000, 50)),
        ("app:4242", Identity(1000, 4242)),
        ("1000:staff", Identity(1000, 50)),
        ("1000", Identity(1000, 1001)),  # a known uid takes its passwd primary gid
        ("3000", Identity(3000, None)),
        ("root", Identity(0, 0)),
    ],
)
def test_resolve(spec, expected):
    assert lookup(spec) == expected


@pytest.mark.parametrize(
    ("spec", "passwd", "group", "fragment"),
    [
        ("ghost", PASSWD, GROUP, "no such user"),
        ("app", None, GROUP, "has no /etc/passwd"),
        ("app:wheel", PASSWD, GROUP, "group 'wheel'"),
        ("app:staff", PASSWD, None, "has no /etc/group"),
    ],
)
def test_unknown_names_are_errors(spec, passwd, group, fragment):
    with pytest.raises(UserNotFound, match=fragment):
        lookup(spec, passwd, group)


def test_duplicate_names_first_entry_wins():
    # node: ParsePasswdFilter returns every match and containerd takes users[0] (getpwnam's rule).
    # we: the first line named "app" decides; the later uid 2000 is never used.
    assert lookup("app") == Identity(1000, 1001)
    assert lookup("app:staff").gid == 50  # the first "staff" group, not the second (60)


def test_a_broken_first_entry_is_not_skipped_for_a_later_good_one():
    # node: the first line named "app" wins even with its uid field missing: Uid stays 0, root.
    # we: that line is the hit, and it is refused; falling through to uid 1000 would hide root.
    passwd = b"app:x\napp:x:1000:1000::/:/bin/sh\n"
    with pytest.raises(InvalidAccountEntry,
                       match=r"line 1 of /etc/passwd \('app:x'\) has no uid field.*uid 0"):
        lookup("app", passwd)


@pytest.mark.parametrize(
    ("line", "field", "node_reads"),
    [
        (b"app:x:4294967296:1000", "uid field '4294967296'", "uid 0"),  # uint32 cast wraps to 0
        (b"app:x:4294967297:1000", "uid field '4294967297'", "uid 1"),
        (b"app:x:2147483648:1000", "uid field '2147483648'", "uid 2147483648"),  # the API server refuses
        (b"app:x:3000000000:1000", "uid field '3000000000'", "uid 3000000000"),
        (b"app:x:-1:1000", "uid field '-1'", "uid 4294967295"),
        (b"app:x:+1000:1000", "uid field '\\+1000'", "uid 1000"),  # Atoi takes a sign; "plain" does not
        (b"app:x:abc:1000", "uid field 'abc'", "uid 0"),  # Atoi's error is ignored: 0
        (b"app:x::1000", "uid field ''", "uid 0"),  # empty field: 0
        (b"app:x: 1000:1000", "uid field ' 1000'", "uid 0"),  # inner blank: Atoi fails, 0
        (f"app:x:{ARABIC}:1000".encode(), f"uid field '{ARABIC}'", "uid 0"),  # Arabic-Indic digits
        (b"app:x:99999999999999999999999:1", "uid field '99999999999999999999999'", "uid 4294967295"),
        (b"app:x:1000:4294967296", "gid field '4294967296'", "gid 0"),
        (b"app:x:1000:", "gid field ''", "gid 0"),
        (b"app:x:1000", "has no gid field", "gid 0"),  # missing field: Gid stays 0
        (b"app", "has no uid field", "uid 0"),
    ],
)
def test_id_fields_the_node_would_misread_are_refused_with_the_line_named(line, field, node_reads):
    # node: Atoi with the error ignored, then uint32(...): the value in node_reads.
    # we: the lookup is unresolvable and the message names the line, the field and what the node does.
    with pytest.raises(InvalidAccountEntry,
                       match=rf"line 2 of /etc/passwd .*{field}.*would use {node_reads}"):
        lookup("app", b"root:x:0:0\n" + line + b"\n")


def test_malformed_lines_that_are_not_hit_do_not_matter():
    # node: moby parses every line but containerd only uses the first match; others are harmless.
    # we: only the line the lookup hits is checked.
    passwd = b"bad:x:notanumber:1\nhuge:x:99999999999:1\nnogid:x:1500:\napp:x:1000:1000\n"
    assert lookup("app", passwd) == Identity(1000, 1000)


def test_group_id_fields_are_checked_too():
    # node: GIDFromPath takes uint32(Atoi(field)) of the first group so named: 4294967296 → gid 0.
    # we: refused with the group line named.
    with pytest.raises(InvalidAccountEntry, match=r"line 1 of /etc/group .*gid field '4294967296'.*gid 0"):
        lookup("app:wheel", group=b"wheel:x:4294967296:\n")


def test_top_of_the_id_range():
    # node and API server: 2147483647 (math.MaxInt32) is the largest id; 2147483648 is not one.
    assert MAX_ID == 2147483647
    assert lookup("top", b"top:x:2147483647:2147483647\n") == Identity(MAX_ID, MAX_ID)
    assert lookup("2147483647:2147483647") == Identity(MAX_ID, MAX_ID)
    with pytest.raises(InvalidAccountEntry, match="2147483648"):
        lookup("over", b"over:x:2147483648:1\n")
    with pytest.raises(InvalidAccountEntry, match="gid field '2147483648'"):
        lookup("over", b"over:x:1:2147483648\n")


@pytest.mark.parametrize("spec", ["4294967296", "2147483648", "99999999999999999999999999", "-1",
                                  "app:4294967296", "1000:2147483648", "1000:-5"])
def test_numbers_outside_the_range_are_invalid_and_never_names(spec):
    # node: before CVE-2026-46680, containerd passed a part that failed the range check to
    # WithUsername, so a passwd line *named* "4294967296" with uid 0 ran the container as root.
    # we: the spec is invalid; a passwd/group that defines the number as a name changes nothing.
    trap = (b"4294967296:x:0:0\n2147483648:x:0:0\n99999999999999999999999999:x:0:0\n-1:x:0:0\n"
            b"app:x:1000:1000\n")
    trap_group = b"4294967296:x:0:\n2147483648:x:0:\n-5:x:0:\n"
    parsed = split_user(spec)
    assert parsed is not None and parsed.problem is not None and not parsed.needs_files
    with pytest.raises(InvalidUserSpec, match=r"outside 0\.\.2147483647.*never looked up as a name"):
        resolve(parsed, passwd=trap, group=trap_group)


def test_numeric_user_parts_read_like_atoi():
    # node: containerd's Atoi takes an optional sign and leading zeros: "+1000" and "01000" are uid
    # 1000, "-0" is uid 0; the kubelet's ParseInt agrees.  we: the same numbers, so nothing to patch.
    assert split_user("+1000").user_id == 1000
    assert split_user("01000").user_id == 1000
    assert split_user("-0").user_id == 0
    assert lookup("+1000:+50") == Identity(1000, 50)


def test_user_zero_with_a_group_is_root():
    # node: USER 0:1000 runs as uid 0 with gid 1000.  we: uid 0, which the policy refuses as root.
    assert lookup("0:1000") == Identity(0, 1000)
    assert lookup("0", PASSWD) == Identity(0, 0)


def test_a_name_that_maps_to_uid_0_is_root():
    # node: WithUsername runs "toor" as uid 0.  we: uid 0 (the policy refuses it as root).
    assert lookup("toor", b"toor:x:0:0::/:/bin/sh\n") == Identity(0, 0)


@pytest.mark.parametrize("digits", [ARABIC, FULLWIDTH, MONGOLIAN])
def test_non_ascii_digits_are_names_as_the_runtime_reads_them(digits):
    # node: Go's Atoi accepts ASCII digits only, so USER 1000 in Arabic-Indic or fullwidth digits
    # is a *name*, looked up in /etc/passwd; the kubelet's ParseInt agrees ("non-numeric user").
    # we: the same: a name. Python's int() would read 1000 here; we must not.
    parsed = split_user(digits)
    assert not parsed.user_is_numeric and parsed.problem is None and parsed.needs_files
    with pytest.raises(UserNotFound, match="no such user"):
        lookup(digits, b"app:x:1000:1000\n")
    assert lookup(digits, f"{digits}:x:1234:1234\n".encode()) == Identity(1234, 1234)


def test_nis_lines_are_ordinary_lines():
    # node: moby gives "+" and "-" lines no meaning: "+app" is a user named "+app", not "app";
    # "+" with empty fields parses as uid 0 for a USER "+".
    # we: the same names; a hit on "+" is refused because its uid field is empty.
    passwd = b"+app::::::\n-ghost\n+\napp:x:1000:1000\n"
    assert lookup("app", passwd) == Identity(1000, 1000)
    with pytest.raises(UserNotFound):
        lookup("ghost", passwd)
    with pytest.raises(InvalidAccountEntry, match="line 3"):
        lookup("+", passwd)


def test_comments_in_passwd_are_lines_but_skipped_in_group():
    # node: moby's passwd parser has no comment syntax ("#app" is a name); its group parser skips "#".
    # we: the same.
    passwd = b"# app:x:0:0\n#app:x:0:0\napp:x:1000:1000\n"
    assert lookup("app", passwd) == Identity(1000, 1000)
    assert lookup("#app", passwd) == Identity(0, 0)
    with pytest.raises(UserNotFound):
        lookup("app:#staff", passwd, b"#staff:x:50:\n")


def test_crlf_and_surrounding_white_space():
    # node: bufio.ScanLines drops the "\r"; bytes.TrimSpace trims Go white space (incl. U+00A0, U+3000).
    # we: the same; a "\r" or "\x1c" *inside* the line stays part of the field, as in Go.
    passwd = "  app:x:1000:1001:App:/:/bin/sh\r\n\u3000node:x:2000:2000\u00a0\r\n".encode()
    assert lookup("app", passwd) == Identity(1000, 1001)
    assert lookup("node", passwd) == Identity(2000, 2000)
    with pytest.raises(UserNotFound):  # Go does not trim \x1c (Python's str.strip would)
        lookup("odd", b"\x1codd:x:1:1\n")
    # only "\n" ends a line: a vertical tab or U+2028 inside a line does not start a new entry
    with pytest.raises(UserNotFound):
        lookup("evil", "app:x:1000:1000\u2028evil:x:0:0\n".encode())


def test_missing_and_empty_fields():
    # node: missing fields keep Go's zero value (0); empty ones Atoi to 0.
    # we: refused when hit (see above); lines with an empty name or only blanks are never hits.
    passwd = b"\n   \n:x:0:0\napp:x:1000:1000\n"
    assert lookup("app", passwd) == Identity(1000, 1000)


def test_a_ten_megabyte_line_is_refused_in_bounded_time_and_memory():
    # node: bufio.Scanner stops at 64 KiB ("token too long"); the whole parse fails, so the container
    # does not start, even when the user's line comes first.
    # we: unresolvable, naming the line; one pass over the data, no copy of the file per line.
    huge = b"app:x:1000:1000\nbig:x:1:1:" + b"A" * (10 * 1024 * 1024) + b"\n"
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(InvalidAccountEntry, match=r"line 2 of /etc/passwd is 10485770 bytes long"):
            lookup("app", huge)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 4 * 1024 * 1024  # never a second copy of the 10 MB


def test_the_passwd_line_limit_is_the_scanners():
    # node: a 65535-byte line (plus "\n") fits bufio.Scanner's 64 KiB buffer; 65536 bytes does not.
    # we: the same boundary; group lines may be 1 MiB (moby raises the group scanner's buffer).
    fits = b"app:x:1000:1000:" + b"g" * (65535 - 16) + b"\n"
    assert lookup("app", fits) == Identity(1000, 1000)
    with pytest.raises(InvalidAccountEntry, match="stops at 65536 bytes"):
        lookup("app", b"app:x:1000:1000:" + b"g" * (65536 - 16) + b"\n")
    members = ",".join(f"u{i}" for i in range(20000)).encode()
    assert lookup("app:big", group=b"big:x:77:" + members + b"\n").gid == 77


def test_every_refusal_is_an_unresolvable_user():
    # The resolver turns exactly this family into an answer (uid None + the reason), never a crash.
    for exc in (UserNotFound, InvalidUserSpec, InvalidAccountEntry):
        assert issubclass(exc, UnresolvableUser)
