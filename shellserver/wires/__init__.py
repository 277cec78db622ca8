"""The wires: one module (or package) per way of connecting, side by side.

Each wire turns its protocol's bytes into the same things (a login, a line
typed, a window size) and hands them to the shared session start, editor and
shell above it. ``ssh`` lives here; telnet (today ``shellserver.telnet``)
and the browser terminal join it (see docs/ssh-design.md).
"""
