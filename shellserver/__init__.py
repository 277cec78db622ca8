"""shellserver: a multi-user shell server on Twisted."""

__version__ = "0.2.0"
