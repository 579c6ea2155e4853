"""``mutator report`` output: a terminal table, JSON, and a self-contained Markdown or HTML report.

The Markdown and HTML documents are what an auditor receives: they say which
controls the guardrail serves, when the scan ran, against which cluster, the
counts per namespace, and every container with its evidence (image digest,
USER, effective runAsUser/runAsNonRoot, verdict). Nothing is loaded from
elsewhere: the HTML carries its own style.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from mutator.commands.inventory import VERDICTS, Scan

CONTROLS = (
    ("ISO/IEC 27001 A.9.4.4", "Use of privileged utility programs",
     "containers run as root only where this report shows it"),
    ("ISO/IEC 27001 A.12.6.1", "Management of technical vulnerabilities",
     "a non-root process limits what an exploited vulnerability in an image can do"),
    ("ISO/IEC 27001 A.14.2.5", "Secure system engineering principles",
     "least privilege is enforced at admission, before anything runs"),
    ("NIST SP 800-171 3.1.7", "Prevent non-privileged users from executing privileged functions",
     "every admission decision is written to the API server's audit log (auditAnnotations), and "
     "every patched Pod records its evidence in the nonroot-mutator.dev/run-as annotation"),
)
CONTAINER_COLUMNS = ("namespace", "mode", "workload", "container", "image", "digest", "user",
                     "runAsUser", "runAsNonRoot", "verdict", "detail")
TABLE_COLUMNS = ("NAMESPACE", "MODE", "WORKLOAD", "CONTAINER", "IMAGE", "USER", "RUNASUSER", "NONROOT",
                 "VERDICT", "DETAIL")


def _text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _container_cells(scan: Scan) -> list[tuple[str, ...]]:
    return [tuple(_text(v) for v in (r.namespace, r.mode, r.workload, r.container, r.image, r.digest,
                                     r.user if r.user != "" else '""', r.run_as_user, r.run_as_non_root,
                                     r.verdict, r.detail)) for r in scan.rows]


def _summary_cells(scan: Scan) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    modes = {r.namespace: r.mode for r in scan.rows}
    head = ("namespace", "mode", *VERDICTS)
    rows = [(ns, _text(modes.get(ns)), *(str(counts[v]) for v in VERDICTS))
            for ns, counts in scan.summary().items()]
    return head, rows


def _columns(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]).rstrip()
        for row in rows
    ) + "\n"


def table(scan: Scan) -> str:
    cells = [c[:5] + c[6:] for c in _container_cells(scan)]  # no digest column in a terminal
    head, summary = _summary_cells(scan)
    out = f"cluster {scan.server} (context {scan.context or '-'}), {scan.generated}\n\n"
    out += _columns([TABLE_COLUMNS, *cells]) if cells else "no containers found\n"
    out += "\n" + _columns([tuple(h.upper() for h in head), *summary]) if summary else ""
    return out + "".join(f"not read: {s}\n" for s in scan.skipped)


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown(scan: Scan) -> str:
    head, summary = _summary_cells(scan)
    parts = [
        "# Non-root containers: cluster report\n",
        f"- Cluster (API server): `{scan.server}`\n- Context: `{scan.context or '-'}`\n"
        f"- Generated: {scan.generated}\n- Scope: every {scan.by}, "
        f"{len(scan.rows)} containers in {len(summary)} namespaces\n",
        "## Controls\n",
        _md_table(("control", "title", "how this evidence supports it"), CONTROLS),
        "## Verdicts\n",
        _md_table(("verdict", "meaning"), list(VERDICTS.items())),
        "## Summary per namespace\n",
        _md_table(head, summary),
        "## Containers\n",
        _md_table(CONTAINER_COLUMNS, _container_cells(scan)),
    ]
    if scan.skipped:
        parts += ["## Not read\n", "".join(f"- {_md_escape(s)}\n" for s in scan.skipped)]
    return "\n".join(parts)


_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
          "th,td{border:1px solid #999;padding:.25em .5em;text-align:left;font-size:.9em}"
          "th{background:#eee}td.root{background:#fbb}td.named-user,td.unresolvable{background:#fe9}"
          "code{font-size:.85em}")


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], *, verdict_column: int = -1) -> str:
    out = ["<table><thead><tr>", *(f"<th>{html.escape(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            css = f' class="{html.escape(cell)}"' if index == verdict_column else ""
            cells.append(f"<td{css}>{html.escape(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table>\n"


def html_report(scan: Scan) -> str:
    head, summary = _summary_cells(scan)
    e = html.escape
    body = [
        "<h1>Non-root containers: cluster report</h1>",
        f"<p>Cluster (API server): <code>{e(scan.server)}</code><br>Context: <code>"
        f"{e(scan.context or '-')}</code><br>Generated: {e(scan.generated)}<br>Scope: every {e(scan.by)}, "
        f"{len(scan.rows)} containers in {len(summary)} namespaces</p>",
        "<h2>Controls</h2>", _html_table(("control", "title", "how this evidence supports it"), CONTROLS),
        "<h2>Verdicts</h2>", _html_table(("verdict", "meaning"), list(VERDICTS.items())),
        "<h2>Summary per namespace</h2>", _html_table(head, summary),
        "<h2>Containers</h2>",
        _html_table(CONTAINER_COLUMNS, _container_cells(scan),
                    verdict_column=CONTAINER_COLUMNS.index("verdict")),
    ]
    if scan.skipped:
        body += ["<h2>Not read</h2><ul>", *(f"<li>{e(s)}</li>" for s in scan.skipped), "</ul>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Non-root containers: {e(scan.server)} {e(scan.generated)}</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def render(scan: Scan, output: str) -> str:
    if output == "json":
        return json.dumps(scan.as_json(), indent=2) + "\n"
    if output == "markdown":
        return markdown(scan)
    if output == "html":
        return html_report(scan)
    return table(scan)
