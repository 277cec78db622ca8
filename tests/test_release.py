"""One version everywhere, and news fragments that the release can collect (docs/releasing.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from freshvenv import ROOT

import shellserver

DIST = "txshellserver"
BIN = Path(sys.executable).parent
TYPES = ("security", "removal", "feature", "bugfix", "doc", "misc")
FRAGMENT = re.compile(rf"[a-z0-9][a-z0-9-]*\.({'|'.join(TYPES)})\.md")
HEADING = re.compile(r"^## (\S+) \((\d{4}-\d\d-\d\d)\)$", re.M)


def changelog_versions() -> list[str]:
    return [m.group(1) for m in HEADING.finditer((ROOT / "CHANGELOG.md").read_text())]


def test_the_version_is_the_same_in_the_package_the_metadata_and_the_changelog() -> None:
    source = (ROOT / "shellserver" / "__init__.py").read_text()
    declared = re.search(r'^__version__ = "([^"]+)"$', source, re.M)
    assert declared is not None
    version = declared.group(1)
    built = subprocess.run(
        [str(BIN / "hatchling"), "version"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert built == version, "pyproject.toml does not take the version from shellserver/"
    assert shellserver.__version__ == version, "the installed package is not this checkout's"
    assert metadata.version(DIST) == version
    assert changelog_versions()[0] == version, "no CHANGELOG.md entry for this version"


def test_the_first_release_with_make_dist_has_its_own_version() -> None:
    versions = changelog_versions()
    assert versions[-1] == "0.2.0"
    assert len(set(versions)) == len(versions)
    assert shellserver.__version__ != "0.1.0"


def test_the_shellserver_command_prints_the_version() -> None:
    done = subprocess.run(
        [str(BIN / "shellserver"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout) == (0, f"shellserver {shellserver.__version__}\n")


def test_every_news_fragment_is_named_slug_dot_type_dot_md() -> None:
    for path in (ROOT / "newsfragments").glob("*"):
        assert FRAGMENT.fullmatch(path.name), path.name
        assert path.read_text().strip(), f"{path.name} is empty"


def towncrier_draft(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "towncrier"), "build", "--draft", "--version", "next"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_next_changelog_entry_renders_every_fragment() -> None:
    done = towncrier_draft(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    for path in (ROOT / "newsfragments").glob("*.md"):
        first_line = path.read_text().strip().splitlines()[0]
        assert first_line in done.stdout, path.name


@pytest.mark.parametrize("name", ["notes.md", "fix.bugfixes.md", "Fix_It.bugfix.md"])
def test_a_misnamed_fragment_stops_the_release(tmp_path: Path, name: str) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copy(ROOT / "CHANGELOG.md", tmp_path)
    (tmp_path / "newsfragments").mkdir()
    (tmp_path / "newsfragments" / "fine.feature.md").write_text("Something new.\n")
    assert towncrier_draft(tmp_path).returncode == 0
    (tmp_path / "newsfragments" / name).write_text("Something else.\n")
    done = towncrier_draft(tmp_path)
    assert done.returncode != 0
    assert "fragment" in (done.stdout + done.stderr).lower()
