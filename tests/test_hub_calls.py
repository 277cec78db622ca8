"""Every IHub call's Deferred is handled: an asynchronous hub that fails is logged, never lost.

A clustered hub answers later and can fail (Redis gone); a Deferred dropped on
the floor would then be an "Unhandled error in Deferred" with no context.
"""

from __future__ import annotations

from pathlib import Path

from conftest import LoggedErrors
from harness import Client, add_user, make_server
from twisted.internet.defer import Deferred, fail

from shellserver.app.assembly import Assembly
from shellserver.hub.idle import IdleWatch
from shellserver.hub.local import Delivery, Hub, Message
from shellserver.hub.record import SessionInfo
from shellserver.hub.session import Session


class HubDown(Exception):
    pass


class FailingHub(Hub):
    """The in-memory hub, but the calls named in ``failing`` fail and every call is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()
        self.calls: list[str] = []

    def _maybe(self, name: str, d: Deferred) -> Deferred:  # type: ignore[type-arg]
        self.calls.append(name)
        if name in self.failing:
            d.addErrback(lambda _: None)
            return fail(HubDown(name))
        return d

    def detach(self, session: Session) -> Deferred[None]:
        return self._maybe("detach", super().detach(session))

    def sessions(self) -> Deferred[list[SessionInfo]]:
        return self._maybe("sessions", super().sessions())

    def deliver(
        self, to: SessionInfo, message: Message, sender: str | None = None
    ) -> Deferred[Delivery]:
        return self._maybe("deliver", super().deliver(to, message, sender))

    def broadcast(self, message: Message) -> Deferred[tuple[int, int]]:
        return self._maybe("broadcast", super().broadcast(message))

    def broadcast_here(self, message: Message) -> tuple[int, int]:
        self.calls.append("broadcast_here")
        if "broadcast_here" in self.failing:
            raise HubDown("broadcast_here")
        return super().broadcast_here(message)

    def end_session(self, to: SessionInfo, message: Message | None) -> Deferred[None]:
        return self._maybe("end_session", super().end_session(to, message))


def _server(tmp_path: Path, **overrides: object) -> tuple[Assembly, FailingHub]:
    hub = FailingHub()
    server = make_server(tmp_path, hub=hub, **overrides)
    add_user(server, "alice")
    return server, hub


def _online(server: Assembly, name: str = "alice") -> Client:
    c = Client(server)
    assert f"{name}@testhost" in c.login(name)
    c.output()
    return c


def _logged(errors: LoggedErrors) -> list[str]:
    return [e["log_format"] for e in errors.flush(HubDown)]


def test_a_failing_detach_on_disconnect_is_logged(
    tmp_path: Path, logged_errors: LoggedErrors
) -> None:
    server, hub = _server(tmp_path)
    a = _online(server)
    hub.failing.add("detach")
    a.drop()
    assert _logged(logged_errors) == ["detaching {tty} failed"]


def test_idle_watch_goes_through_the_hub_and_handles_failures(
    tmp_path: Path, logged_errors: LoggedErrors
) -> None:
    server, hub = _server(tmp_path)
    a = _online(server)
    watch = IdleWatch(hub, 600)
    server.clock.advance(540)  # type: ignore[attr-defined]
    hub.failing.add("deliver")
    watch.scan(server.clock.seconds())
    assert _logged(logged_errors) == ["{what} failed"]
    server.clock.advance(60)  # type: ignore[attr-defined]
    hub.failing = {"end_session"}
    watch.scan(server.clock.seconds())
    assert _logged(logged_errors) == ["{what} failed"]
    assert "end_session" in hub.calls
    hub.failing = set()
    watch.scan(server.clock.seconds())
    assert "logging you out" in a.output() and a.disconnecting


def test_a_failing_shutdown_broadcast_is_logged(
    tmp_path: Path, logged_errors: LoggedErrors
) -> None:
    server, hub = _server(tmp_path)
    _online(server)
    hub.failing.add("broadcast_here")
    schedule = server.shutdown
    schedule.schedule(10, "maintenance", "root", "console", "test")
    schedule.cancel("root", "console", "test")
    assert _logged(logged_errors) == ["shutdown notice failed"] * 2


def test_on_max_replace_ends_the_old_session_through_the_hub(tmp_path: Path) -> None:
    server, hub = _server(tmp_path, max_sessions=1, on_max="replace")
    old = _online(server)
    _online(server)
    assert "end_session" in hub.calls
    assert "Session replaced by a new login" in old.output() and old.disconnecting
