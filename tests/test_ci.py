"""What CI runs: the suite on the newest Twisted and on the oldest that pyproject.toml admits.

The lower bound in pyproject.toml is a promise; it holds only if CI runs the suite on that
version. ``make test-oldest`` pins it from ``.ci/twisted-oldest.txt``: this keeps the pin and
the bound one version, and ``.ci/run`` running both.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _twisted_bound() -> Version:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (twisted,) = (
        Requirement(r) for r in project["dependencies"] if Requirement(r).name.lower() == "twisted"
    )
    (spec,) = twisted.specifier  # one lower bound, nothing else
    assert spec.operator == ">=", f"twisted must have a lower bound only, not {spec}"
    return Version(spec.version)


def _pinned() -> Version:
    pins = [
        line.split("==")
        for line in (ROOT / ".ci" / "twisted-oldest.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert [name.strip().lower() for name, _ in pins] == ["twisted"]
    return Version(pins[0][1].strip())


def test_the_oldest_twisted_tested_is_the_lower_bound() -> None:
    assert _pinned() == _twisted_bound()


def test_ci_runs_the_suite_on_the_newest_and_the_oldest_twisted() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b(?!-)", run, re.M)
    assert re.search(r"^make test-oldest\b", run, re.M)
    makefile = (ROOT / "Makefile").read_text()
    oldest = makefile.split("\ntest-oldest:", 1)[1].split("\n\n", 1)[0]
    assert "$(OLDEST)/bin/pytest\n" in oldest + "\n"  # the whole suite, not a marked part
    assert "-c .ci/twisted-oldest.txt" in makefile


def test_make_test_fast_leaves_out_what_starts_real_processes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    fast = makefile.split("\ntest-fast:", 1)[1].split("\n\n", 1)[0]
    assert '-m "not integration"' in fast
