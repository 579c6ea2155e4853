"""The image's merged root filesystem, asked one path at a time, and containerd's ``RootPath`` over it.

containerd reads a container's ``/etc/passwd`` with ``fs.RootPath(root,
"/etc/passwd")`` (``continuity/fs/path.go``) and opens the result. ``RootPath``
walks the path one component at a time with ``lstat``; a symlink's target
replaces the path walked so far (an absolute target restarts at the image
root), every join is ``filepath.Join`` (so ``..`` is cleaned *lexically* and
never climbs above the root), and more than 255 links is an error. This module
is a line-by-line port of that walk, with ``lstat`` answered by the layers
instead of a disk, so a link resolves to exactly the file the node opens and
nothing outside the image is ever read.

The layers are merged the way the overlayfs snapshotter (every Kubernetes
node's default) merges them: per path, the topmost layer that says anything
decides: an entry there, or a whiteout; a directory lets lower layers show
through unless it is opaque; a non-directory hides everything below it. A
hardlink names another entry of its own layer (each layer is unpacked alone
into its own directory; a link to a path that layer lacks fails the unpack).

Layers are consulted top-down and only as deep as a path needs, so the scan
still stops at the first layer that decides ``/etc/passwd``; when a link sends
the walk to a new path, each layer is asked again about that path (answered
from its recorded facts, or rescanned for the new path).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Protocol

from mutator.errors import UnreadableAccountFile
from mutator.resolve.registry.layerscan import (
    DIR,
    FILE,
    HARDLINK,
    MAX_ACCOUNT_FILE_BYTES,
    OTHER,
    SYMLINK,
    Entry,
    LayerFacts,
)

# continuity's walkLink refuses once more than 255 links were followed (the kernel stops at 40;
# containerd is the one opening the file, so its bound is the one that decides).
MAX_LINKS = 255


class Layers(Protocol):
    """The image's layers, bottom first, asked for facts conclusive about one path."""

    def __len__(self) -> int: ...

    def digest(self, index: int) -> str: ...

    async def facts(self, index: int, path: str) -> LayerFacts: ...


@dataclass(frozen=True, slots=True)
class Found:
    entry: Entry | None  # None: nothing there
    layer: str | None = None  # digest of the layer that decided


@dataclass(frozen=True, slots=True)
class AccountFile:
    """``/etc/passwd`` or ``/etc/group`` as the runtime would read it."""

    content: bytes | None  # None: absent, or unreadable (see problem)
    layer: str | None = None  # the layer whose entry was read
    problem: str | None = None  # why the runtime could not read it


class _NotADirectory(Exception):
    pass


class _TooManyLinks(Exception):
    pass


def _clean(path: str) -> str:
    """Go's ``filepath.Clean`` (POSIX ``normpath`` keeps a leading ``//``; Go does not)."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _join(*parts: str) -> str:
    """Go's ``filepath.Join``: empty parts dropped, the result cleaned."""
    joined = "/".join(p for p in parts if p)
    return _clean(joined) if joined else ""


def _split(path: str) -> tuple[str, str]:
    """Go's ``filepath.Split``: the directory keeps its trailing slash."""
    i = path.rfind("/")
    return path[: i + 1], path[i + 1:]


def _describe(entry: Entry) -> str:
    return {DIR: "a directory", FILE: "a file", SYMLINK: "a symbolic link"}.get(entry.kind, entry.what)


class MergedTree:
    def __init__(self, layers: Layers) -> None:
        self._layers = layers

    async def lstat(self, path: str) -> Found:
        """What ``lstat`` sees at absolute *path* in the container's root filesystem."""
        rel = _clean("/" + path).lstrip("/")
        if not rel:
            return Found(Entry(DIR))
        prefixes = []
        parent = posixpath.dirname(rel)
        while parent:
            prefixes.append(parent)
            parent = posixpath.dirname(parent)
        prefixes.reverse()
        dirs_above: set[str] = set()
        for index in reversed(range(len(self._layers))):
            facts = await self._layers.facts(index, rel)
            entry = facts.entries.get(rel)
            if entry is not None:
                if entry.kind == HARDLINK:
                    entry = await self._hardlink(index, rel, entry)
                return Found(entry, self._layers.digest(index))
            for prefix in prefixes:
                above = facts.entries.get(prefix)
                if prefix in facts.whiteouts:
                    return Found(None)
                if above is None:
                    continue
                if above.kind == DIR:
                    dirs_above.add(prefix)
                elif prefix in dirs_above:
                    return Found(None)  # a directory higher up hides this layer's non-directory
                elif above.kind == SYMLINK:
                    # RootPath lstats a path whose directory part it has not resolved yet; the kernel
                    # follows that link (even out of the root, onto the host). We answer "nothing
                    # there", which sends RootPath round again to resolve the link itself.
                    return Found(None)
                else:
                    raise _NotADirectory(f"/{prefix} is {_describe(above)}, not a directory")
            if rel in facts.whiteouts or any(d in facts.opaque for d in ("", *prefixes)):
                return Found(None)
        return Found(None)

    async def _hardlink(self, index: int, path: str, entry: Entry) -> Entry:
        # The target was not among the paths recorded when the layer was read: read it again
        # with the target wanted too; the link then carries the target's entry.
        await self._layers.facts(index, entry.target)
        resolved = (await self._layers.facts(index, path)).entries.get(path, entry)
        if resolved.kind == HARDLINK:
            raise UnreadableAccountFile(
                f"/{path} is a hard link to /{entry.target}, which its layer does not hold before it: "
                "the runtime cannot unpack that layer"
            )
        return resolved

    async def _walk_link(self, path: str, walked: list[int]) -> tuple[str, bool]:
        if walked[0] > MAX_LINKS:
            raise _TooManyLinks
        path = _join("/", path)
        if path == "/":
            return path, False
        found = await self.lstat(path)
        if found.entry is None or found.entry.kind != SYMLINK:
            return path, False
        walked[0] += 1
        return found.entry.target, True

    async def _walk_links(self, path: str, walked: list[int]) -> str:
        directory, name = _split(path)
        if not directory:
            return (await self._walk_link(name, walked))[0]
        if not name:
            if directory == "/":
                return directory
            return await self._walk_links(directory[:-1], walked)
        new_dir = await self._walk_links(directory, walked)
        new_path, is_link = await self._walk_link(_join(new_dir, name), walked)
        if not is_link or new_path.startswith("/"):
            return new_path
        return _join(new_dir, new_path)

    async def root_path(self, path: str) -> str:
        """``fs.RootPath(root, path)``, relative to the image root."""
        walked = [0]
        while True:
            before = walked[0]
            path = await self._walk_links(path, walked)
            if before == walked[0]:
                cleaned = _join("/", path)
                if path == cleaned:
                    return cleaned
                path = cleaned

    async def read(self, path: str) -> AccountFile:
        """Open *path* as containerd does: ``RootPath``, then read what it names."""
        try:
            real = await self.root_path(path)
            found = await self.lstat(real)
        except _TooManyLinks:
            return AccountFile(None, problem=f"{path}: too many levels of symbolic links "
                                             f"(over {MAX_LINKS}, containerd's limit)")
        except _NotADirectory as exc:
            return AccountFile(None, problem=f"{path} cannot be opened: {exc}")
        via = "" if real == path else f" (a link resolving to {real})"
        entry = found.entry
        if entry is None:
            problem = f"{path} is a link to {real}, which does not exist in the image" if via else None
            return AccountFile(None, problem=problem)
        if entry.kind == FILE and entry.content is not None:
            return AccountFile(entry.content, layer=found.layer)
        if entry.kind == FILE:
            problem = f"{path}{via} is {entry.size} bytes, over the {MAX_ACCOUNT_FILE_BYTES} byte limit"
        elif entry.kind == OTHER:
            problem = f"{path}{via} is {entry.what}, not a file the runtime can read users from"
        else:
            problem = f"{path}{via} is {_describe(entry)}, not a file"
        return AccountFile(None, layer=found.layer, problem=problem)
