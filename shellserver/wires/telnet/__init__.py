"""Telnet: the protocol over TCP or TLS and its encoder."""
