"""Telnet: a sans-io parser and negotiator (``core``, ``negotiate``, ``events``, ``codes``)
under a thin Twisted protocol over TCP or TLS (``protocol``), and the encoder (``encode``).

The split lets every rule about telnet's bytes be tested with bytes alone,
and keeps what needs Twisted (transport, backpressure, timers) in one small
module.
"""
