"""``make cli`` prints the CLI's output and nothing else, and reinstalls only what changed.

It runs in a copy of the checkout with its own venv (tests/freshvenv.py, given as ``VENV=``),
so installing there does not touch the venv running the tests.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import freshvenv
import pytest
from freshvenv import ROOT, make_env
from realserver import RealServer

#: Each test builds a venv and runs make; one starts the real server.
pytestmark = pytest.mark.integration

# What `make install` builds the wheel from.
SOURCES = ["Makefile", "pyproject.toml", "README.md", "shellserver", "twisted/plugins"]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    copy = tmp_path / "checkout"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
            shutil.copytree(ROOT / name, copy / name, ignore=ignore)
        else:
            copy.mkdir(exist_ok=True)
            shutil.copy(ROOT / name, copy / name)
    return copy


@pytest.fixture
def venv(checkout: Path, tmp_path: Path) -> freshvenv.FreshVenv:
    venv = freshvenv.make(tmp_path / "env")
    # The dependencies are there (freshvenv): what `make` would have installed for the copied
    # pyproject.toml, so the stamp is made after the copy, and newer.
    (venv.root / ".deps-stamp").touch()
    return venv


def test_make_cli_prints_only_the_clis_output_and_installs_only_after_a_change(
    checkout: Path, venv: freshvenv.FreshVenv
) -> None:
    def make_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "cli", f"VENV={venv.root}", *args],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=300,
            env=make_env(),
        )

    installed = venv.site_packages / "shellserver" / "__init__.py"
    first = make_cli("ARGS=--help")
    assert first.returncode == 0, first.stderr
    help_text = venv.run("shellserver", "--help").stdout
    assert help_text.startswith("usage: shellserver")
    assert first.stdout == help_text
    when = installed.stat().st_mtime_ns

    second = make_cli("ARGS=--help")
    assert second.returncode == 0, second.stderr
    assert (second.stdout, second.stderr) == (help_text, "")
    assert installed.stat().st_mtime_ns == when, "make cli reinstalled with nothing changed"

    source = checkout / "shellserver" / "__init__.py"
    source.write_text(source.read_text() + "# changed\n")
    third = make_cli("ARGS=--version")
    assert third.returncode == 0, third.stderr
    assert third.stdout == venv.run("shellserver", "--version").stdout
    assert third.stdout.startswith("shellserver ")
    assert installed.read_text().endswith("# changed\n"), "a changed source was not reinstalled"


def test_make_cli_output_pipes_into_a_json_reader(
    checkout: Path, venv: freshvenv.FreshVenv, server: RealServer
) -> None:
    """As typed: ``make cli ARGS="who --json" | python3 -m json.tool``, the first time too."""
    args = shlex.quote(f"--data {server.data} who --json")
    line = f"set -o pipefail; make cli VENV={venv.root} ARGS={args} | python3 -m json.tool"
    done = subprocess.run(
        ["bash", "-c", line],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=300,
        env=make_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["sessions"] == []
