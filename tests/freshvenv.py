"""A fresh virtualenv that has this test venv's dependencies but not shellserver itself.

What gets installed into it (a wheel, ``make install``) is then the only shellserver there, so a
file missing from the wheel is missing, and nothing needs the network: the dependencies are the
test venv's site-packages, seen through symlinks (``site.addsitedir`` from a ``.pth`` file) minus
shellserver, its dist-info and its twistd plugin. Twisted's own ``twistd`` and ``twist`` commands
are written into the venv's ``bin`` from Twisted's entry points, as pip would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import attrs

#: The checkout the tests run in.
ROOT = Path(__file__).resolve().parent.parent
Tree = dict[str, "Tree"]
PLUGIN = "shellserver_plugin.py"
LAUNCHER = """\
#!{python}
import importlib, sys
target = importlib.import_module({module!r})
for name in {attr!r}.split("."):
    target = getattr(target, name)
sys.exit(target())
"""


def make_env() -> dict[str, str]:
    """The environment of someone typing ``make`` at a shell: no outer make's flags."""
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def _ours(name: str) -> bool:
    """shellserver's files (and Twisted's plugin cache, which would name its plugin)."""
    dist = name.endswith(".dist-info") and "shellserver" in name
    return name in ("shellserver", PLUGIN, "dropin.cache") or dist


def _link_tree(source: Path, target: Path, real: Tree) -> None:
    """Symlink ``source``'s entries into ``target``, leaving ours out; ``real`` names the
    subdirectories made as real directories (recursively), so a file inside can be left out."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if _ours(entry.name) or (target / entry.name).exists():
            continue
        if entry.name in real:
            _link_tree(entry, target / entry.name, real[entry.name])
        else:
            (target / entry.name).symlink_to(entry)


@attrs.frozen
class FreshVenv:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> str:
        return str(self.bin / "python")

    @property
    def site_packages(self) -> Path:
        out = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return Path(out.strip())

    def run(self, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run one of the venv's commands, with only the venv's bin first on PATH."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd or self.root,
            env=env,
        )


def make(root: Path) -> FreshVenv:
    """A venv at ``root / "venv"`` whose dependencies are in ``root / "deps"``."""
    venv = FreshVenv(root / "venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv.root)], check=True)
    deps = root / "deps"
    here = {Path(sysconfig.get_path(k)) for k in ("purelib", "platlib")}
    for site in sorted(here):
        _link_tree(site, deps, {"twisted": {"plugins": {}}})
    (venv.site_packages / "_deps.pth").write_text(f"import site; site.addsitedir({str(deps)!r})\n")
    for ep in metadata.distribution("twisted").entry_points.select(group="console_scripts"):
        script = venv.bin / ep.name
        script.write_text(LAUNCHER.format(python=venv.python, module=ep.module, attr=ep.attr))
        script.chmod(0o755)
    return venv
