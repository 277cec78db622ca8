"""Makes ``twistd shellserver`` and ``twist shellserver`` find the server."""

from twisted.application.service import ServiceMaker

shellserver = ServiceMaker(
    "shellserver",
    "shellserver.app.tap",
    "A multi-user shell server: telnet in, who, write, wall.",
    "shellserver",
)
