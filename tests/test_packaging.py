"""The installed package is what users get: the plugin ships, dropin.cache does not."""

from __future__ import annotations

import subprocess
from importlib import metadata

from realserver import TWISTD


def test_plugin_file_is_in_the_installed_distribution() -> None:
    files = {str(f) for f in metadata.files("shellserver") or []}
    assert "twisted/plugins/shellserver_plugin.py" in files
    assert not any(f.endswith("dropin.cache") for f in files)
    assert not any(f in ("twisted/__init__.py", "twisted/plugins/__init__.py") for f in files)


def test_plugin_is_found_by_twistd() -> None:
    out = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "shellserver" in out


def test_console_script_is_declared() -> None:
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts.get("shellserver") == "shellserver.cli:main"


def test_the_browser_terminals_files_are_in_the_installed_distribution() -> None:
    """``pip install .`` serves a working page: xterm.js is vendored into the wheel."""
    files = {str(f) for f in metadata.files("shellserver") or []}
    base = "shellserver/wires/webassets/"
    for name in ["index.html", "page.js", "page.css", "favicon.svg", "vendor/xterm.js",
                 "vendor/xterm.css", "vendor/addon-fit.js", "vendor/LICENSE.xterm"]:  # fmt: skip
        assert base + name in files, name
    assert not any("node_modules" in f for f in files)
