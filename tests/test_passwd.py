import pytest

from mutator.errors import UserNotFound
from mutator.passwd import Identity, parse_group, parse_passwd, resolve, split_user

PASSWD = b"""root:x:0:0:root:/root:/bin/sh
# a comment
+nis-compat
app:x:1000:1001:App:/home/app:/bin/sh
app:x:2000:2000:shadowed duplicate:/:/bin/false
broken-line
bad:x:notanumber:1
nogid:x:1500:
huge:x:99999999999:1
"""
GROUP = b"root:x:0:\nstaff:x:50:app\napp:x:1001:\nstaff:x:60:\n"


def test_split_user_follows_the_runtimes():
    assert split_user("") is None
    assert split_user(":1000") is None
    assert split_user("app") == split_user("app:")
    spec = split_user("app:staff")
    assert (spec.user, spec.group) == ("app", "staff")
    assert split_user("1000:50").user_is_numeric and split_user("1000:50").group_is_numeric
    assert not split_user("app:50").user_is_numeric


def test_parse_passwd_skips_junk_and_keeps_first_entry():
    users = parse_passwd(PASSWD)
    assert users["app"] == Identity(1000, 1001)
    assert users["root"] == Identity(0, 0)
    assert users["nogid"] == Identity(1500, None)
    assert "bad" not in users and "broken-line" not in users and "huge" not in users


def test_parse_group_keeps_first_entry():
    assert parse_group(GROUP) == {"root": 0, "staff": 50, "app": 1001}


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
    assert resolve(split_user(spec), passwd=PASSWD, group=GROUP) == expected


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
        resolve(split_user(spec), passwd=passwd, group=group)
