"""The documents a user looks for first: the licence the package declares, and the change log."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator

import yaml

from tests.support.chart import CHART, ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def words(text: str) -> str:
    return " ".join(text.split())


def test_license_file_is_the_apache_2_0_text_pyproject_declares():
    assert PYPROJECT["license"] == "Apache-2.0"
    text = words((ROOT / "LICENSE").read_text())
    assert text.startswith("Apache License Version 2.0, January 2004 http://www.apache.org/licenses/")
    sections = re.findall(r"\b(\d)\. ([A-Z][a-z]+(?: [a-zA-Z]+)*)\.", text)
    assert [number for number, _ in sections] == [str(n) for n in range(1, 10)], sections
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text


def test_changelog_starts_at_the_version_the_package_and_the_chart_carry():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    text = (ROOT / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert versions and versions[0] == PYPROJECT["version"] == chart["version"] == chart["appVersion"]
    assert versions[-1] == "0.1.0"  # where the log starts
    assert "### Added" in text.split(f"## [{versions[0]}]", 1)[1]


def test_readme_says_how_to_build_and_push_and_that_the_default_image_is_a_placeholder():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    install = (ROOT / "README.md").read_text().split("## Install on a cluster", 1)[1].split("\n## ", 1)[0]
    assert "docker build -t" in install and "buildah bud -t" in install and "docker push" in install
    assert f"`{values['image']['repository']}`, is a placeholder" in install
    assert "--set image.repository=" in install


# What the README's troubleshooting quotes, as the code words it (a placeholder splits a message).
QUOTED_MESSAGES = (
    "nonroot-mutator refused the pod: ",
    "could not be checked, this is temporary and the request can be retried: ",
    "has a user that cannot be verified as non-root: ",
    "not checked",
    "requires authentication (HTTP ",
    ") and no credentials match this image",
    "refused every matching credential (HTTP ",
    "TLS handshake with ",
    "failed: the registry answered in plain HTTP",
    "TLS with ",
    "; set registries.",
    "cannot reach ",
    "no answer from the registry before the admission deadline",
    "registry lookup failed",
    "registry_failure",
    "not checked yet, the Pods' admission decides",
)


def code_strings() -> Iterator[str]:
    """The package's string literals, adjacent ones and f-string parts joined as Python joins them."""
    for path in sorted((ROOT / "mutator").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield node.value


def readme_section(title: str) -> str:
    return (ROOT / "README.md").read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_readme_has_upgrade_uninstall_and_troubleshooting_after_the_install():
    headings = re.findall(r"^## (.+)$", (ROOT / "README.md").read_text(), re.MULTILINE)
    start = headings.index("Install on a cluster")
    assert {"Upgrade", "Uninstall", "Troubleshooting"} <= set(headings[start:])
    assert "helm upgrade " in readme_section("Upgrade") and "helm uninstall " in readme_section("Uninstall")
    trouble = readme_section("Troubleshooting")
    for topic in ("failurePolicy: Fail", "could not be checked", "CreateContainerConfigError",
                  "Where the warnings go", "kubectl label namespace my-team nonroot-mutator/mode-",
                  "kubectl delete mutatingwebhookconfiguration"):
        assert topic in trouble, topic


def test_troubleshooting_quotes_messages_the_code_really_prints():
    trouble = " ".join(readme_section("Troubleshooting").split())
    code = "\n".join(code_strings())
    for message in QUOTED_MESSAGES:
        assert message in trouble, f"the README no longer quotes {message!r}"
        assert message in code, f"the code no longer says {message!r}: mend the README's troubleshooting"
