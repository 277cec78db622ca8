"""`make assets`: copy xterm.js out of the npm packages into the Python package, with checksums.

``npm ci`` (run by ``make assets`` before this) installs exactly what
``package-lock.json`` pins, checked against its integrity hashes. This copies
the built files the page needs, and each package's LICENCE, into
``shellserver/wires/web/assets/vendor/`` and writes ``SHA256SUMS`` there;
``tests/test_web.py`` checks the committed files against it. The files are
committed, so ``make run`` and ``pip install .`` need no npm (docs/admin.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = HERE / "node_modules"
VENDOR = HERE.parent / "shellserver" / "wires" / "web" / "assets" / "vendor"
#: (package, file inside it, name in vendor/)
FILES = [
    ("@xterm/xterm", "lib/xterm.js", "xterm.js"),
    ("@xterm/xterm", "css/xterm.css", "xterm.css"),
    ("@xterm/xterm", "LICENSE", "LICENSE.xterm"),
    ("@xterm/addon-fit", "lib/addon-fit.js", "addon-fit.js"),
    ("@xterm/addon-fit", "LICENSE", "LICENSE.addon-fit"),
]


def main() -> int:
    if not MODULES.is_dir():
        print("webassets/node_modules is missing: run 'make assets' (npm ci first)")
        return 1
    VENDOR.mkdir(parents=True, exist_ok=True)
    sums = []
    versions = {}
    for package, inside, name in FILES:
        source = MODULES / package / inside
        shutil.copyfile(source, VENDOR / name)
        digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
        sums.append(f"{digest}  {name}\n")
        meta = json.loads((MODULES / package / "package.json").read_text())
        versions[package] = meta["version"]
    (VENDOR / "SHA256SUMS").write_text("".join(sums))
    (VENDOR / "VERSIONS").write_text("".join(f"{p} {v}\n" for p, v in sorted(versions.items())))
    print(f"vendored {', '.join(f'{p} {v}' for p, v in sorted(versions.items()))} into {VENDOR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
