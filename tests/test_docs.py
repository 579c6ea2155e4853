"""The documents a user looks for first: the licence the package declares, and the change log."""

from __future__ import annotations

import re
import tomllib

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
