"""The Redis link's life as a state machine (Automat, as Twisted's own ``ClientService``).

The link (:mod:`shellserver.hub.cluster.link`) has two connections, each kept by its own
``ClientService`` (connect, ``prepareConnection``, backoff). This machine decides what the
*pair* means to the node: whether calls go out, and when ``on_up``, ``on_down`` and the
two log lines happen. Its inputs are what the link's caller does (``start``, ``stop``) and
what the connections report: ``connected`` (both are prepared: SELECTed, SUBSCRIBEd) and
``failed(why)`` (an attempt failed, a prepared connection was lost, or Redis did not
answer a call in time).

Every state answers every input, so a late or repeated report is never an error; the
table is the whole machine (tests/test_cluster_linkstate.py checks it against the built
one):

==========  =========  ==========  ===========================================================
state       input      next        what happens
==========  =========  ==========  ===========================================================
stopped     start      connecting  connect: both ClientServices start connecting
stopped     stop       stopped     close: nothing is open; ``stop()``'s Deferred fires
stopped     connected  stopped     nothing (a late report: the services are stopped)
stopped     failed     stopped     nothing (a connection closing because we stopped)
connecting  start      connecting  nothing
connecting  stop       stopped     close: services stopped, connections closed
connecting  connected  up          went_up: "connected to" logged, subscriptions synced, on_up
connecting  failed     down        log_down: the one "unavailable" line (no on_down: it was
                                   never up)
up          start      up          nothing
up          stop       stopped     close (no on_down: a stop is not an outage)
up          connected  up          nothing (both are already prepared)
up          failed     down        outage: both connections dropped, the "unavailable" line,
                                   on_down; each ClientService reconnects on its backoff
down        start      down        nothing
down        stop       stopped     close
down        connected  up          went_up
down        failed     down        nothing: one line per outage, however many retries fail
==========  =========  ==========  ===========================================================

``connecting`` and ``down`` both wait for the pair; they differ only in whether the
outage has been said (the line, and ``on_down`` if the link was up), so that is a state
here rather than flags to keep in step. While ``down`` a connection already prepared stays
open and waits for its partner; calls go out, and messages are handed on, only in ``up``.

All inputs return None, so Automat queues one made from inside a transition (``on_up``
calling ``stop()``) and runs it after the current one, instead of refusing it.
"""

from __future__ import annotations

from typing import Protocol

from automat import TypeMachineBuilder


class LinkInputs(Protocol):
    """What can happen to the link: its caller's calls, and its connections' reports."""

    def start(self) -> None:
        """The caller wants the link: connect and keep reconnecting."""

    def stop(self) -> None:
        """The caller is done: stop reconnecting, close both connections."""

    def connected(self) -> None:
        """Both connections are prepared (SELECTed, SUBSCRIBEd)."""

    def failed(self, why: str) -> None:
        """An attempt failed, a prepared connection was lost, or a call got no answer."""


class LinkCore(Protocol):
    """What the machine asks of the link; :class:`~shellserver.hub.cluster.link.RedisLink`
    implements it, privately (its callers never call these). ``state`` is written here
    only, and read by the link's ``available``."""

    state: str

    def _connect(self) -> None:
        """Start both connections' ClientServices."""

    def _close(self) -> None:
        """Stop both ClientServices, close every connection, fire ``stop()``'s Deferreds."""

    def _drop(self) -> None:
        """Forget both prepared connections and close them (their services reconnect)."""

    def _went_up(self) -> None:
        """Log "connected to", sync the subscriptions, call ``on_up``."""

    def _went_down(self) -> None:
        """Call ``on_down``."""

    def _log_down(self, why: str) -> None:
        """Log the one "unavailable" line of this outage."""


_builder = TypeMachineBuilder(LinkInputs, LinkCore)  # type: ignore[type-abstract]
stopped = _builder.state("stopped")
connecting = _builder.state("connecting")
up = _builder.state("up")
down = _builder.state("down")

stopped.upon(LinkInputs.connected).loop().returns(None)
stopped.upon(LinkInputs.failed).loop().returns(None)
connecting.upon(LinkInputs.start).loop().returns(None)
up.upon(LinkInputs.start).loop().returns(None)
up.upon(LinkInputs.connected).loop().returns(None)
down.upon(LinkInputs.start).loop().returns(None)
down.upon(LinkInputs.failed).loop().returns(None)


@stopped.upon(LinkInputs.start).to(connecting)
def connect(inputs: LinkInputs, core: LinkCore) -> None:
    """Leaving ``stopped``: the caller wants the link, so both services start."""
    core.state = "connecting"
    core._connect()


@stopped.upon(LinkInputs.stop).loop()
@connecting.upon(LinkInputs.stop).to(stopped)
@up.upon(LinkInputs.stop).to(stopped)
@down.upon(LinkInputs.stop).to(stopped)
def close(inputs: LinkInputs, core: LinkCore) -> None:
    """Any state to ``stopped``: nothing may reconnect after the caller is done."""
    core.state = "stopped"
    core._close()


@connecting.upon(LinkInputs.connected).to(up)
@down.upon(LinkInputs.connected).to(up)
def went_up(inputs: LinkInputs, core: LinkCore) -> None:
    """Both connections prepared: calls may go out, and the caller republishes."""
    core.state = "up"
    core._went_up()


@connecting.upon(LinkInputs.failed).to(down)
def log_down(inputs: LinkInputs, core: LinkCore, why: str) -> None:
    """An attempt failed before the link was ever up: the outage is said once, but
    there is no ``on_down`` (nothing was up to go down)."""
    core.state = "down"
    core._log_down(why)


@up.upon(LinkInputs.failed).to(down)
def outage(inputs: LinkInputs, core: LinkCore, why: str) -> None:
    """A link that was up is lost: both connections are dropped so they come back
    together, said once, and the caller told."""
    core.state = "down"
    core._drop()
    core._log_down(why)
    core._went_down()


#: ``LinkMachine(core)`` is a new link machine, in ``stopped``.
LinkMachine = _builder.build()
