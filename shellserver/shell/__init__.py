"""Logging in, the one session start, splitting and dispatching command lines; commands/ holds the
commands."""
