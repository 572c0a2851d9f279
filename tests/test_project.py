"""The project's own files agree with each other: Python version, documentation links."""

import re
import sys
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent


def test_python_version_is_stated_consistently():
    """pyproject, Makefile and README all say Python 3.11 (constraints.txt is resolved on 3.11 only)."""
    spec = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"])
    assert spec == SpecifierSet(">=3.11,<3.12")
    assert Version("3.11.7") in spec and Version("3.12.0") not in spec and Version("3.10.9") not in spec
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^PYTHON \?= python3\.11$", makefile, re.M)
    assert "sys.version_info[:2] == (3, 11)" in makefile  # an existing .venv of another version is refused
    readme = (REPO / "README.md").read_text()
    assert "Python 3.11" in readme and '">=3.11,<3.12"' in readme
    assert Version(".".join(map(str, sys.version_info[:3]))) in spec  # the venv the tests run in
