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
