"""TLS telnet (``--telnet ssl:…``): a shim that keeps the TLS handshake from deadlocking.

The telnet wire answers ``pauseProducing`` by also pausing its transport's
reading (a client that does not read its output should not be read from).
Under TLS that transport is Twisted's TLS protocol, which pauses its producer
whenever cleartext is written before the handshake is done: the telnet
greeting is, so the wire stopped reading the socket, the client's handshake
was never read, and the connection hung. Between the two, this wrapper takes
``pauseProducing``/``resumeProducing`` calls from the wire and drops them: the
TLS layer does its own flow control on what it sends, and the wire's output
buffer still holds and, if it stalls, aborts. And where TCP closes with a
producer still registered, TLS waits for it to unregister, which the wire
never does: closing unregisters it first. (Phase B: once the wire no longer
pauses reads itself, or checks for a finished handshake, this goes away.)
"""

from __future__ import annotations

from typing import cast

from twisted.internet.protocol import Factory
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory


class _KeepReading(ProtocolWrapper):
    def pauseProducing(self) -> None:
        """The wire asks to stop reading: under TLS that would stop the handshake; ignored."""

    def resumeProducing(self) -> None:
        """Nothing was paused."""

    def loseConnection(self) -> None:
        """TLS closes only once no producer is registered (TCP does not wait): unregister first."""
        if self.transport is not None:
            self.transport.unregisterProducer()  # type: ignore[attr-defined]
        super().loseConnection()


class _TLSWrappingFactory(WrappingFactory):
    protocol = _KeepReading
    noisy = False


def for_endpoint(description: str, factory: Factory) -> Factory:
    """``factory`` for a listen endpoint, wrapped when the endpoint is TLS."""
    if description.split(":", 1)[0] == "ssl":
        return cast(Factory, _TLSWrappingFactory(factory))
    return factory
