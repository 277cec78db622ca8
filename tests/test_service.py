"""ShellService.prepare without a real reactor: what a failed start leaves behind."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock

from shellserver.app.config import Config
from shellserver.app.control import ControlFactory
from shellserver.app.service import ShellService
from shellserver.ops.httpguard import Guard
from shellserver.wires.ssh.server import ShellSSHFactory
from shellserver.wires.telnet.protocol import TelnetFactory


class Refusing(MemoryReactorClock):
    """Refuses TCP or unix listeners, as a port in use or a denied path would."""

    def __init__(self, refuse: str) -> None:
        super().__init__()
        self.refuse = refuse

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if self.refuse == "tcp":
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "in use"))
        return super().listenTCP(port, factory, backlog, interface)

    def listenUNIX(self, address: str, factory: Any, *args: Any, **kwargs: Any) -> Any:
        if self.refuse == "unix":
            raise CannotListenError(None, address, OSError(errno.EACCES, "denied"))
        return super().listenUNIX(address, factory, *args, **kwargs)


def prepare(data: Path, refuse: str) -> str:
    service = ShellService(
        Config(data=str(data), telnet=("tcp:2323",), hash_cost=4), Refusing(refuse)
    )
    with pytest.raises(SystemExit) as e:
        service.prepare()
    if hasattr(service, "db"):
        service.db.close()
        service.datadir.unlock()
    return str(e.value)


def test_a_telnet_port_that_cannot_be_bound_creates_nothing(tmp_path: Path) -> None:
    said = prepare(tmp_path / "data", "tcp")
    assert said.startswith("shellserver: cannot listen on tcp:2323: ")
    assert not (tmp_path / "data").exists()


def test_a_control_socket_failing_after_the_first_start_created_things_says_so(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    said = prepare(data, "unix")
    assert said.startswith(f"shellserver: cannot listen on unix:{data}/control.sock")
    assert said.endswith(
        f"(this start created {data} and the account 'admin', whose password is in "
        f"{data}/initial-admin-password)"
    )
    assert "this start created" not in prepare(data, "unix")  # nothing new the second time


def test_an_ssh_port_that_cannot_be_bound_creates_nothing_not_even_host_keys(
    tmp_path: Path,
) -> None:
    service = ShellService(
        Config(
            data=str(tmp_path / "data"),
            telnet=(f"unix:{tmp_path}/telnet.sock",),
            ssh=("tcp:2222",),
            hash_cost=4,
        ),
        Refusing("tcp"),
    )
    with pytest.raises(SystemExit, match="cannot listen on tcp:2222"):
        service.prepare()
    assert not (tmp_path / "data").exists()


def test_every_listener_is_bound_once_with_its_own_factory(tmp_path: Path) -> None:
    """No placeholder stands in for a factory until the parts exist: the parts are built
    first, each port is bound with the factory that serves it, and what lives in the data
    dir (the store, the host keys) is open before the reactor runs."""
    reactor = Refusing("nothing")
    data = tmp_path / "data"
    service = ShellService(
        Config(
            data=str(data), telnet=("tcp:2323",), ssh=("tcp:2222",), web=("tcp:8080",), hash_cost=4
        ),
        reactor,
    )
    service.prepare()
    try:
        bound = {port: factory for port, factory, _, _ in reactor.tcpServers}
        assert sorted(bound) == [2222, 2323, 8080]
        assert isinstance(bound[2323], TelnetFactory)
        assert isinstance(bound[8080], Guard)
        ssh = bound[2222]
        assert isinstance(ssh, ShellSSHFactory)
        assert ssh.privateKeys.keys() == ssh.publicKeys.keys() != set()
        [(address, control, *_)] = reactor.unixServers
        assert address == f"{data}/control.sock"
        assert isinstance(control, ControlFactory)
        assert len(service.db.users()) == 1  # the first start's admin: the store is open
    finally:
        service.db.close()
        service.datadir.unlock()
