"""Reading what a developer applies: files, standard input or directories of YAML/JSON manifests.

Round-trip YAML (``ruamel.yaml``) so that ``mutator review --fix`` can print
the manifests back with their comments and key order. Input is bounded and
checked before parsing: a file over :data:`MAX_FILE_BYTES` or not in UTF-8 is
a clear :class:`~mutator.errors.BadInput`, never a traceback.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from mutator.decide.admission import MAX_BODY_BYTES
from mutator.errors import BadInput

MAX_FILE_BYTES = MAX_BODY_BYTES  # what the API server itself would take in one request
# Nodes a file may expand to once YAML aliases are followed ("billion laughs" stays a few KiB on disk).
MAX_EXPANDED_NODES = 1_000_000
SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"


@dataclass(frozen=True, slots=True)
class Source:
    """One file (or standard input) and its YAML documents, as loaded (comments kept)."""

    path: str
    documents: list[Any]
    indent: tuple[int, int, int] = (2, 4, 2)  # mapping, sequence, offset: as the file is written


@dataclass(frozen=True, slots=True)
class Item:
    """One object to review: a document, or an item of a ``List``.

    ``pointer`` is where the object sits in ``document`` (``""`` or ``/items/3``),
    so a fix computed for the object can be applied to what will be printed back.
    """

    source: str
    document: Any
    pointer: str
    obj: Any


def _yaml(indent: tuple[int, int, int] = (2, 4, 2)) -> YAML:
    yaml = YAML()  # round-trip: comments, key order and quotes survive a load and dump
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line the developer wrote on one line
    yaml.brace_single_entry_mapping_in_flow_sequence = True  # [{a: 1}] stays [{a: 1}], not [a: 1]
    mapping, sequence, offset = indent
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


_KEY = re.compile(r"^( *)[^\s#-][^#]*:\s*(#.*)?$")  # a key whose value follows on the next lines
_ITEM = re.compile(r"^( *)- ")


def guess_indent(text: str) -> tuple[int, int, int]:
    """How the file indents nested mappings and block sequences, so ``--fix`` changes only what it adds.

    ``kubectl get -o yaml`` writes sequences flush with their key (``- name`` under
    ``containers:``), most hand-written manifests indent them by two; both survive.
    """
    mapping, offset = 0, None
    lines = text.splitlines()
    for before, line in itertools.pairwise(lines):
        key = _KEY.match(before)
        if not key:
            continue
        item = _ITEM.match(line)
        indent = len(line) - len(line.lstrip(" "))
        if item and offset is None:
            offset = len(item.group(1)) - len(key.group(1))
        elif not item and line.strip() and not mapping and indent > len(key.group(1)):
            mapping = indent - len(key.group(1))
        if mapping and offset is not None:
            break
    mapping = mapping or 2
    offset = max(0, offset if offset is not None else 2)
    return mapping, offset + 2, offset


def files(paths: Sequence[str]) -> list[str]:
    """Expand directories into their ``*.yaml``/``*.yml``/``*.json`` files, recursively, sorted."""
    found: list[str] = []
    for path in paths:
        if path != STDIN and os.path.isdir(path):
            inside = sorted(str(p) for p in Path(path).rglob("*")
                            if p.suffix in SUFFIXES and p.is_file())
            if not inside:
                raise BadInput(f"{path}: no *.yaml, *.yml or *.json files in this directory")
            found.extend(inside)
        else:
            found.append(path)
    return found


def _read(path: str) -> bytes:
    try:
        if path == STDIN:
            data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BadInput(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return data


def load(path: str) -> Source:
    """One file's documents; empty documents (``---`` alone) are dropped."""
    data = _read(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text (byte {exc.start}): manifests must be UTF-8") from None
    stream = io.StringIO(text)
    stream.name = path  # the parser's messages name the file, not "<unicode string>"
    try:
        documents = [d for d in _yaml().load_all(stream) if d is not None]
    except YAMLError as exc:  # one line: the parser's message spans several
        raise BadInput(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. duplicate keys, deep nesting
        raise BadInput(f"{path}: cannot read: {' '.join(str(exc).split())}") from None
    for document in documents:
        if _expanded_size(document, {}, set()) > MAX_EXPANDED_NODES:
            raise BadInput(f"{path}: YAML aliases expand to over {MAX_EXPANDED_NODES} nodes")
    return Source(path, documents, guess_indent(text))


def _expanded_size(node: Any, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes *node* stands for with every alias expanded; linear in the nodes as loaded (memoised)."""
    if not isinstance(node, dict | list):
        return 1
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise BadInput("a YAML alias refers to a node that contains it")
    open_.add(key)
    children = node.values() if isinstance(node, dict) else node
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_)
        if total > MAX_EXPANDED_NODES:
            break
    open_.discard(key)
    sizes[key] = total
    return total


def yaml_type(value: Any) -> str:
    """What *value* is called in YAML, not the name of the class the parser made for it."""
    for kinds, name in ((bool, "a boolean"), (dict, "a mapping"), (list, "a list"), (str, "a string"),
                        ((int, float), "a number")):
        if isinstance(value, kinds):
            return name
    return "null" if value is None else type(value).__name__


def items(sources: Sequence[Source]) -> Iterator[Item]:
    """Every object, with ``List`` kinds (``kind: List``, ``DeploymentList``…) opened into their items."""
    for source in sources:
        for index, document in enumerate(source.documents):
            where = f"{source.path}#{index + 1}" if len(source.documents) > 1 else source.path
            if not isinstance(document, dict):
                raise BadInput(f"{where}: a manifest must be a mapping, got {yaml_type(document)}")
            kind = document.get("kind")
            if isinstance(kind, str) and kind.endswith("List") and "items" in document:
                entries = document["items"]
                if not isinstance(entries, list):
                    raise BadInput(f"{where}: {kind}.items must be a list")
                for position, entry in enumerate(entries):
                    if not isinstance(entry, dict):
                        raise BadInput(f"{where}: {kind}.items[{position}] must be a mapping")
                    yield Item(where, document, f"/items/{position}", entry)
            else:
                yield Item(where, document, "", document)


def dump(sources: Sequence[Source]) -> str:
    """The documents of every source back as YAML, one stream; each source introduced by a comment."""
    out = io.StringIO()
    for source in sources:
        if not source.documents:
            continue
        yaml = _yaml(source.indent)
        out.write(f"# Source: {source.path}\n" if source.path != STDIN else "")
        for document in source.documents:
            out.write("---\n")
            yaml.dump(document, out)
    return out.getvalue()
