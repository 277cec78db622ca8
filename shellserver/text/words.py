"""Counting in English, so every "1 sessions" is caught in one place."""

from __future__ import annotations


def counted(n: int, noun: str) -> str:
    """``1 session``, ``2 sessions``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
