"""The wires: one module (or package) per way of connecting, side by side.

Each wire turns its protocol's bytes into the same things (a login, a line
typed, a window size) and hands them to the shared session start, editor and
shell above it (docs/architecture.md): ``telnet`` (also under TLS) and ``ssh``
today, the browser terminal next.
"""
