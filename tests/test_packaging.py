"""The installed package is what users get: the plugin ships, dropin.cache does not.

The wheel ``make dist`` builds is installed into a fresh venv (tests/freshvenv.py) and its
three commands run from there, so what the wheel leaves out shows up as a failure.
"""

from __future__ import annotations

import re
import subprocess
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import freshvenv
import pytest
from realserver import TWISTD

import shellserver

ROOT = freshvenv.ROOT
DIST = "txshellserver"
WEB_ASSETS = ["index.html", "page.js", "page.css", "favicon.svg", "vendor/xterm.js",
              "vendor/xterm.css", "vendor/addon-fit.js", "vendor/LICENSE.xterm"]  # fmt: skip


def test_plugin_file_is_in_the_installed_distribution() -> None:
    files = {str(f) for f in metadata.files(DIST) or []}
    assert "twisted/plugins/shellserver_plugin.py" in files
    assert not any(f.endswith("dropin.cache") for f in files)
    assert not any(f in ("twisted/__init__.py", "twisted/plugins/__init__.py") for f in files)


def test_plugin_is_found_by_twistd() -> None:
    out = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "shellserver" in out


def test_console_script_is_declared() -> None:
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts.get("shellserver") == "shellserver.app.cli:main"


def test_the_browser_terminals_files_are_in_the_installed_distribution() -> None:
    """``pip install .`` serves a working page: xterm.js is vendored into the wheel."""
    files = {str(f) for f in metadata.files(DIST) or []}
    base = "shellserver/wires/web/assets/"
    for name in WEB_ASSETS:
        assert base + name in files, name
    assert not any("node_modules" in f for f in files)


def test_the_distribution_is_not_the_other_shellserver_on_the_index() -> None:
    """``shellserver`` on the package index is an unrelated project: ours is txshellserver."""
    assert metadata.metadata(DIST)["Name"] == DIST
    assert metadata.version(DIST) == shellserver.__version__


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``make dist`` into a temporary directory: the sdist and the wheel built from it."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        ["make", "dist", f"DIST={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=freshvenv.make_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    yield out


@pytest.fixture(scope="module")
def wheel(built: Path) -> Path:
    wheels = list(built.glob("*.whl"))
    assert [w.name for w in wheels] == [f"{DIST}-{shellserver.__version__}-py3-none-any.whl"]
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> freshvenv.FreshVenv:
    venv = freshvenv.make(tmp_path_factory.mktemp("fresh"))
    done = venv.run("python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel))
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


def test_make_dist_builds_the_sdist_and_the_wheel(built: Path) -> None:
    names = sorted(p.name for p in built.iterdir())
    version = shellserver.__version__
    assert names == [f"{DIST}-{version}-py3-none-any.whl", f"{DIST}-{version}.tar.gz"]


def test_the_wheel_holds_the_package_the_plugin_and_the_web_assets(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "shellserver/app/cli.py" in names
    assert "twisted/plugins/shellserver_plugin.py" in names
    for name in WEB_ASSETS:
        assert "shellserver/wires/web/assets/" + name in names, name
    assert not {"twisted/__init__.py", "twisted/plugins/__init__.py"} & names
    assert not any(n.endswith(("dropin.cache", ".pyc")) or "node_modules" in n for n in names)
    meta = zipfile.ZipFile(wheel).read(f"{DIST}-{shellserver.__version__}.dist-info/METADATA")
    assert re.search(rb"^Name: txshellserver$", meta, re.M)


def test_the_installed_wheel_is_the_only_shellserver_in_the_fresh_venv(
    installed: freshvenv.FreshVenv,
) -> None:
    where = installed.run("python", "-c", "import shellserver; print(shellserver.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.site_packages)


def test_twistd_runs_the_plugin_from_the_wheel(installed: freshvenv.FreshVenv) -> None:
    done = installed.run("twistd", "-n", "shellserver", "--help")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--telnet=" in done.stdout and "--web=" in done.stdout


def test_twist_runs_the_plugin_from_the_wheel(installed: freshvenv.FreshVenv) -> None:
    done = installed.run("twist", "shellserver", "--help")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--telnet=" in done.stdout and "--web=" in done.stdout


def test_the_shellserver_command_runs_from_the_wheel(installed: freshvenv.FreshVenv) -> None:
    done = installed.run("shellserver", "--help")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("usage: shellserver")
    version = installed.run("shellserver", "--version")
    assert version.stdout == f"shellserver {shellserver.__version__}\n"


def test_the_installed_wheel_serves_the_browser_terminals_files(
    installed: freshvenv.FreshVenv,
) -> None:
    base = installed.site_packages / "shellserver" / "wires" / "web" / "assets"
    for name in WEB_ASSETS:
        assert (base / name).is_file(), name


PIP_INSTALL = re.compile(r"pip install((?:[ \t]+[^\s`|;&#)]+)+)")
REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def test_every_install_line_in_the_docs_installs_this_project() -> None:
    """No ``pip install shellserver`` (another project's name on the index): a path or a wheel."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    wheels = []
    for doc in docs:
        for m in PIP_INSTALL.finditer(doc.read_text()):
            for arg in m.group(1).split():
                if arg.startswith("-"):
                    continue
                if arg == "." or "/" in arg or arg.endswith((".whl", ".tar.gz")):
                    wheels += [arg] if arg.endswith(".whl") else []
                    continue
                name = REQUIREMENT_NAME.match(arg)
                assert name and name.group(0).lower() != "shellserver", f"{doc.name}: {m.group(0)}"
    assert "dist/txshellserver-*-py3-none-any.whl" in wheels
