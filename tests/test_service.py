"""ShellService.prepare without a real reactor: what a failed start leaves behind."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock

from shellserver.app.config import Config
from shellserver.app.service import ShellService


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
