# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl).
"""A CONNECT storm client that is not the limit: raw MQTT 3.1.1 CONNECT packets
on non-blocking sockets, one epoll loop per process, no MQTT library.

Each process keeps its share of ``in_flight`` CONNECTs outstanding, keeps every
accepted connection open until the whole storm is done (as devices do), and
retries a refused or dropped CONNECT until the deadline (each retry counted as
a failure). It measures its own CPU time (user + system) so that a report can
tell a broker-bound run from a client-bound one:

    capacity = connected / client CPU seconds

is what the client could sustain with one core to itself; a run measures the
broker only while that capacity is several times the measured rate.
"""

import errno
import multiprocessing
import resource
import select
import socket
import time

CONNACK_ACCEPTED = b"\x20\x02"


def raise_fd_limit(needed):
    """Raise this process's open-file limit to ``needed`` (up to the hard
    limit); return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _storm_loop(address, packets, in_flight, deadline):
    """Connect ``packets`` (one CONNECT each) with ``in_flight`` outstanding;
    return (connected, failures, first start, last accept, cpu seconds)."""
    epoll = select.epoll()
    pending = list(reversed(range(len(packets))))  # indexes to (re)connect
    sockets = {}  # fd -> (socket, packet index, state)
    kept = []  # accepted connections, held open until the end
    connected = failures = 0
    cpu_start = _cpu_seconds()
    started = time.monotonic()
    last_accept = started

    def launch():
        index = pending.pop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            pending.append(index)
            return False
        # on loopback the handshake is usually done already: send at once
        # and wait for the CONNACK (one epoll round instead of two)
        try:
            sock.send(packets[index])
        except OSError:
            sockets[sock.fileno()] = [sock, index, "connecting", b""]
            epoll.register(sock.fileno(), select.EPOLLOUT)
        else:
            sockets[sock.fileno()] = [sock, index, "reading", b""]
            epoll.register(sock.fileno(), select.EPOLLIN)
        return True

    def drop(fd):
        nonlocal failures
        sock, index, _state, _buf = sockets.pop(fd)
        epoll.unregister(fd)
        sock.close()
        failures += 1
        pending.append(index)

    try:
        while (pending or sockets) and time.monotonic() < deadline:
            while pending and len(sockets) < in_flight:
                if not launch():
                    failures += 1
                    break
            for fd, events in epoll.poll(0.5):
                entry = sockets.get(fd)
                if entry is None:
                    continue
                sock, index, state, buf = entry
                if events & (select.EPOLLERR | select.EPOLLHUP) and state != "reading":
                    drop(fd)
                elif state == "connecting":
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        drop(fd)
                        continue
                    try:
                        sock.send(packets[index])
                    except OSError:
                        drop(fd)
                        continue
                    entry[2] = "reading"
                    epoll.modify(fd, select.EPOLLIN)
                else:
                    try:
                        data = sock.recv(4)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    buf += data
                    if not data:
                        drop(fd)
                    elif len(buf) < 4:
                        entry[3] = buf
                    elif buf[:2] == CONNACK_ACCEPTED and buf[3] == 0:
                        epoll.unregister(fd)
                        del sockets[fd]
                        kept.append(sock)
                        connected += 1
                        last_accept = time.monotonic()
                    else:
                        drop(fd)
        cpu = _cpu_seconds() - cpu_start
    finally:
        for sock, *_rest in sockets.values():
            sock.close()
        epoll.close()
    result = (connected, failures, started, last_accept, cpu, kept)
    return result


def _worker(address, packets, in_flight, timeout, barrier, results):
    raise_fd_limit(len(packets) + in_flight + 64)
    barrier.wait()
    deadline = time.monotonic() + timeout
    connected, failures, started, last, cpu, kept = _storm_loop(
        address, packets, in_flight, deadline
    )
    results.put((connected, failures, started, last, cpu))
    # hold the connections until every process is done (the parent says so)
    barrier.wait()
    for sock in kept:
        sock.close()


def storm(host, port, packets, in_flight, processes=1, timeout=180):
    """Send every CONNECT of ``packets`` to ``host:port`` from ``processes``
    processes; return the storm's figures (a dict, see bench/README.md)."""
    address = (socket.gethostbyname(host), port)
    processes = max(1, min(processes, len(packets) or 1))
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes + 1)
    results = context.Queue()
    share = max(1, in_flight // processes)
    workers = [
        context.Process(
            target=_worker,
            args=(address, packets[i::processes], share, timeout, barrier, results),
            daemon=True,
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    barrier.wait()  # everybody starts together
    parts = [results.get(timeout=timeout + 60) for _worker_ in workers]
    barrier.wait()  # and closes together
    for worker in workers:
        worker.join(timeout=30)
    connected = sum(p[0] for p in parts)
    start = min(p[2] for p in parts)
    wall = max(p[3] for p in parts) - start
    cpu = sum(p[4] for p in parts)
    rate = connected / wall if wall > 0 else None
    capacity = connected / cpu if cpu > 0 else None
    return {
        "connected": connected,
        "attempted": len(packets),
        "wall_seconds": round(wall, 3),
        "connects_per_second": round(rate, 1) if rate else None,
        "failures": sum(p[1] for p in parts),
        "in_flight": share * processes,
        "client_processes": processes,
        "client_cpu_seconds": round(cpu, 3),
        # what the client could sustain on one core of its own
        "client_capacity_per_second": round(capacity, 1) if capacity else None,
        # a measurement of the broker only while the client has headroom
        "client_bound": bool(rate and capacity and capacity < 3 * rate),
    }
