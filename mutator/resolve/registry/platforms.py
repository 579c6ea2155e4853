"""Which entry of a multi-platform index the node would run: containerd's platform matcher.

The node's runtime does not look for an exact ``os/architecture/variant``
string; it normalises names and accepts compatible older variants, best first
(containerd ``platforms.Only``, ``platformVector`` and ``normalizeArch``).
We must pick the same image the node will run, so these rules follow it:

- names are normalised: ``x86_64``/``x86-64`` → ``amd64``, ``aarch64`` → ``arm64``,
  ``i386`` → ``386``, ``armhf`` → ``arm/v7``, ``armel`` → ``arm/v6``; OS names are lowercased;
- ``arm64`` with no variant is ``arm64/v8`` (and ``v8``/``8`` is written as no variant);
  ``arm`` with no variant is ``arm/v7``; ``amd64/v1`` is plain ``amd64``;
- preference, best first:
  ``amd64/vN`` → ``amd64/vN`` … ``amd64/v2``, ``amd64``, then ``386``;
  ``arm/vN`` → ``arm/vN`` … ``arm/v5``;
  ``arm64/v8.N`` → ``arm64/v8.N`` … ``arm64/v8``, then 32-bit ``arm/v8`` … ``arm/v5``;
  ``arm64/v9.N`` → ``arm64/v9.N`` … ``arm64/v9``, ``arm64/v8.(N+5)`` … ``arm64/v8``, then ``arm``;
- an index entry without a platform matches anything but ranks after every match;
- among equally good entries, the first in the index wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mutator.resolve.registry.settings import PlatformSpec

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "i386": "386"}


def normalize(os: str, architecture: str, variant: str | None) -> tuple[str, str, str]:
    """``(os, architecture, variant)`` in containerd's canonical spelling ('' for no variant)."""
    os, arch, var = os.lower(), architecture.lower(), (variant or "").lower()
    if arch == "armhf":
        return os, "arm", "v7"
    if arch == "armel":
        return os, "arm", "v6"
    arch = _ARCH_ALIASES.get(arch, arch)
    if arch == "386" or (arch, var) in {("amd64", "v1"), ("arm64", "8"), ("arm64", "v8")}:
        var = ""  # the baseline of its architecture, written without a variant
    elif arch == "arm":
        var = {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}.get(var, var)
    return os, arch, var


def _number(variant: str) -> int | None:
    digits = variant.removeprefix("v")
    return int(digits) if digits.isdigit() else None


def preference(platform: PlatformSpec) -> list[tuple[str, str, str]]:
    """Every platform the node would accept for *platform*, best first (all normalised)."""
    os, arch, variant = normalize(platform.os, platform.architecture, platform.variant)
    vector = [(os, arch, variant)]
    if arch == "amd64":
        level = _number(variant)
        if level is not None and level > 1:
            vector += [normalize(os, arch, f"v{v}") for v in range(level - 1, 0, -1)]
        vector.append((os, "386", ""))
    elif arch == "arm":
        level = _number(variant)
        if level is not None and level > 5:
            vector += [(os, arch, f"v{v}") for v in range(level - 1, 4, -1)]
    elif arch == "arm64":
        vector += _arm64_fallbacks(os, variant or "v8")
    return list(dict.fromkeys(vector))


def _arm64_fallbacks(os: str, variant: str) -> list[tuple[str, str, str]]:
    major_text, _, minor_text = variant.removeprefix("v").partition(".")
    if not major_text.isdigit() or int(major_text) < 8:
        return []
    major, minor = int(major_text), int(minor_text) if minor_text.isdigit() else 0

    def named(major: int, minor: int) -> tuple[str, str, str]:
        return normalize(os, "arm64", f"v{major}" if minor == 0 else f"v{major}.{minor}")

    vector = []
    if major == 9:
        vector += [named(9, m) for m in range(minor - 1, -1, -1)]
        vector.append(named(8, min(minor + 5, 9)))  # v9.x kept pace with v8.(x+5)
        major, minor = 8, min(minor + 5, 9)
    vector += [named(major, m) for m in range(minor - 1, -1, -1)]
    # every 64-bit arm also runs 32-bit arm images, from v8 down
    vector += [(os, "arm", f"v{v}") for v in range(8, 4, -1)]
    return vector


def rank(entry: Mapping[str, Any] | None, wanted: Sequence[tuple[str, str, str]]) -> int | None:
    """Position of an index entry's platform in *wanted* (lower is better); None if it won't run."""
    if entry is None:
        return len(wanted)  # no platform: acceptable, after every real match
    os, arch, variant = entry.get("os"), entry.get("architecture"), entry.get("variant")
    if not isinstance(os, str) or not isinstance(arch, str):
        return None
    key = normalize(os, arch, variant if isinstance(variant, str) else None)
    try:
        return wanted.index(key)
    except ValueError:
        return None
