# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""Real broker processes for the tests, the benchmarks and ``make run``:
:mod:`.rabbitmq` (a private RabbitMQ node), :mod:`.mosquitto` (a private
Mosquitto). Plain Python, no Odoo import. What both need is here.
"""

import contextlib
import socket


class BrokerError(RuntimeError):
    """The broker could not be found, started or reached."""


def free_ports(count):
    """``count`` distinct TCP ports free on loopback right now."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def port_open(port, host="127.0.0.1"):
    with (
        contextlib.suppress(OSError),
        socket.create_connection((host, port), timeout=0.5),
    ):
        return True
    return False
