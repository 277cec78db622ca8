"""The hub without any protocol: tables, tty names, delivery, broadcast, logout."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from shellserver.hub.local import Delivery, Hub, IHub, Message
from shellserver.hub.session import Session
from shellserver.terminal.discipline import IWire, Redraws, Terminal
from shellserver.wires.telnet.encode import encode


@implementer(IWire)
class Sink:
    kind = "tel"
    peer = "192.0.2.1"
    width = 80
    height = 24
    term = ""
    backlogged = False

    def __init__(self, accept: bool = True) -> None:
        self.got: list[bytes] = []
        self.accept = accept
        self.closed = False

    def send(self, text: str) -> None:
        self.got.append(text.encode())

    def send_message(self, lead: str, message: Message, after: str = "") -> bool:
        if self.accept:
            self.got.append(encode(lead) + message.encoded(self.kind, encode) + encode(after))
        return self.accept

    def drain(self) -> Deferred[None]:
        return Deferred()

    def set_echo(self, on: bool) -> None:
        pass

    def session_started(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def result(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    return box[0]


def session(hub: Hub, user: str, n: int, accept: bool = True) -> tuple[Session, Sink]:
    sink = Sink(accept)
    s = Session(
        n, user, "user", hub.take_tty("tel"), "p", 0.0, Terminal(sink, Redraws(Clock())), 0.0
    )
    hub.attach(s)
    return s, sink


def test_provides_the_interface() -> None:
    assert verifyObject(IHub, Hub())


def test_tables_by_user_and_login_order() -> None:
    hub = Hub()
    a1, _ = session(hub, "alice", 1)
    b, _ = session(hub, "bob", 2)
    a2, _ = session(hub, "alice", 3)
    assert result(hub.sessions()) == [a1, b, a2]
    assert result(hub.sessions_of("alice")) == [a1, a2]
    assert result(hub.sessions_of("nobody")) == []
    assert (len(hub), hub.users()) == (3, 2)
    hub.detach(a1)
    hub.detach(a1)  # twice is harmless
    assert result(hub.sessions_of("alice")) == [a2]
    hub.detach(a2)
    assert hub.users() == 1


def test_tty_names_reuse_the_lowest_free_number() -> None:
    hub = Hub()
    s0, _ = session(hub, "a", 1)
    s1, _ = session(hub, "b", 2)
    s2, _ = session(hub, "c", 3)
    assert [s0.tty, s1.tty, s2.tty] == ["tel/0", "tel/1", "tel/2"]
    hub.detach(s1)
    hub.detach(s0)
    assert result(hub.allocate_tty("tel")) == "tel/0"
    assert hub.take_tty("tel") == "tel/1"
    assert hub.take_tty("tel") == "tel/3"
    assert hub.take_tty("ssh") == "ssh/0"


def test_broadcast_encodes_once_and_counts_who_got_it() -> None:
    hub = Hub()
    sinks = [session(hub, f"u{i}", i)[1] for i in range(3)]
    session(hub, "slow", 9, accept=False)
    msg = Message.of("hello\nwörld")
    body = "hello\r\nwörld\r\n".encode()
    calls: list[str] = []

    def counting(text: str) -> bytes:
        calls.append(text)
        return encode(text)

    assert msg.encoded("tel", counting) == body
    assert result(hub.broadcast(msg)) == (3, 1)
    for sink in sinks:
        assert sink.got[-1].endswith(body)
    assert msg.encoded("tel", counting) is msg.encoded("tel", counting)
    assert len(calls) == 1  # once for every telnet recipient


def test_deliver_reports_a_drop() -> None:
    hub = Hub()
    s, _ = session(hub, "slow", 1, accept=False)
    assert result(hub.deliver(s, Message.of("x"))) is Delivery.DROPPED


def test_deliver_says_gone_and_refused() -> None:
    hub = Hub()
    s, _ = session(hub, "bob", 1)
    hub.set_ignores("bob", frozenset({"eve"}))
    assert result(hub.deliver(s, Message.of("x"), "eve")) is Delivery.REFUSED
    assert result(hub.deliver(s, Message.of("x"))) is Delivery.DELIVERED  # a notice
    s.mesg = False
    assert result(hub.deliver(s, Message.of("x"), "alice")) is Delivery.REFUSED
    assert result(hub.deliver(s, Message.of("x"), None)) is Delivery.DELIVERED
    hub.detach(s)
    assert result(hub.deliver(s, Message.of("x"), "alice")) is Delivery.GONE


def test_admit_refuses_or_names_the_oldest() -> None:
    hub = Hub()
    a1, _ = session(hub, "alice", 1)
    a2, _ = session(hub, "alice", 2)
    assert result(hub.admit("alice", 3, 3, replace=False)) == []
    assert result(hub.admit("alice", 3, 2, replace=False)) is None
    assert result(hub.admit("alice", 3, 1, replace=True)) == [a1, a2]
    hub.end_session(a1, None)
    assert result(hub.sessions_of("alice")) == [a2]  # detached at once, not when the TCP goes


def test_logout_user_tells_then_closes_only_that_user() -> None:
    hub = Hub()
    _, a = session(hub, "alice", 1)
    _, b = session(hub, "bob", 2)
    assert result(hub.logout_user("alice", Message.of("bye"))) == 1
    assert a.closed and b"bye" in a.got[-1]
    assert not b.closed
    assert result(hub.logout_user("nobody", None)) == 0


def test_a_message_with_a_common_lead_is_encoded_once_per_lead() -> None:
    msg = Message.of("hi\xff")
    calls: list[str] = []

    def counting(text: str) -> bytes:
        calls.append(text)
        return encode(text)

    after_newline = msg.encoded_after("tel", "\n", counting)
    assert after_newline == encode("\n") + msg.encoded("tel", counting)
    assert msg.encoded_after("tel", "\n", counting) is after_newline
    assert msg.encoded_after("tel", "", counting) is msg.encoded("tel", counting)
    assert calls == ["\nhi\xff\n", "hi\xff\n"]
