"""One connection to one server: a TCP (or TLS over TCP) socket, frames out, frames in.

Owns dialling, the TLS handshake, deadlines on every blocking call, and splitting the byte
stream into frames. Must not decide which server to talk to or what to retry (that is
``zatt.client``'s business) nor block past the deadline it is given.
The read buffer grows only as bytes arrive, and a frame whose declared length is over the
frame limit is refused before any of it is awaited, so a hostile server costs at most
``max_frame_bytes`` of memory and one timeout of time.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time

from . import wire

__all__ = ["Conn", "ConnError", "not_the_protocol", "split_endpoint"]

_READ_CHUNK = 64 * 1024


class ConnError(Exception):
    """The connection is no longer usable (or was never made). ``kind``: ``timeout`` (no
    answer by the deadline), ``io`` (the socket failed or the server closed it), ``protocol``
    (bytes that are not this protocol, or a TLS failure), or ``deadline`` (the deadline passed
    before a connection could even be tried)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6 literals) into its parts."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host:
        raise ValueError(f"endpoint {endpoint!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"endpoint {endpoint!r}: port {port!r} is not a number") from None
    if not 0 < number < 65536:
        raise ValueError(f"endpoint {endpoint!r}: port {number} is out of range")
    return host, number


class Conn:
    """A connected socket. Every method takes a deadline (a ``time.monotonic()`` value) and
    raises :class:`ConnError` once it passes or the connection fails."""

    def __init__(
        self,
        addr: str,
        connect_timeout: float,
        tls: ssl.SSLContext | None,
        server_name: str | None,
        max_frame_bytes: int,
    ) -> None:
        self.addr = addr
        self._max_frame = max_frame_bytes
        self._rbuf = bytearray()
        self._rpos = 0
        # Whether a whole response frame has arrived: see answered().
        self._answered = False
        host, port = split_endpoint(addr)
        deadline = time.monotonic() + connect_timeout
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except socket.timeout:
            raise ConnError("timeout", f"connecting to {addr} timed out") from None
        except OSError as e:
            raise ConnError("io", f"cannot connect to {addr}: {e.strerror or e}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                # The handshake happens here, within the connect timeout, so that a
                # certificate problem is reported as such rather than as a failed request.
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock = tls.wrap_socket(sock, server_hostname=server_name or host)
        except ssl.SSLCertVerificationError as e:
            sock.close()
            raise ConnError("protocol", f"TLS handshake with {addr}: {e.verify_message}") from None
        except ssl.SSLError as e:
            sock.close()
            raise ConnError("protocol", f"TLS handshake with {addr}: {e}") from None
        except socket.timeout:
            sock.close()
            raise ConnError("timeout", f"TLS handshake with {addr} timed out") from None
        except OSError as e:
            sock.close()
            raise ConnError("io", f"TLS handshake with {addr}: {e}") from None
        self._sock: socket.socket = sock

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def _set_timeout(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ConnError("timeout", f"no answer from {self.addr} in time")
        self._sock.settimeout(left)

    def send(self, data: bytes, deadline: float) -> None:
        self._set_timeout(deadline)
        try:
            self._sock.sendall(data)
        except socket.timeout:
            raise ConnError("timeout", f"sending to {self.addr} timed out") from None
        except ssl.SSLError as e:
            raise ConnError("protocol", f"TLS with {self.addr}: {e}") from None
        except OSError as e:
            raise ConnError("io", f"sending to {self.addr}: {e.strerror or e}") from None

    def recv(self, deadline: float) -> tuple[int, wire.Response]:
        """The next response frame, whatever its request id."""
        while True:
            got = self._take_frame()
            if got is not None:
                return got
            self._fill(deadline)

    def _take_frame(self) -> tuple[int, wire.Response] | None:
        """The first response frame in the buffer, decoded and consumed, once it has all
        arrived; bytes that are no response frame are an error naming the peer."""
        try:
            n = wire.frame_length(self._rbuf, self._rpos, self._max_frame)
            if n is None or len(self._rbuf) - self._rpos < n:
                return None
            frame = bytes(self._rbuf[self._rpos : self._rpos + n])
            self._rpos += n
            if self._rpos == len(self._rbuf):
                self._rbuf.clear()
                self._rpos = 0
            got = wire.decode_response(frame)
            self._answered = True
            return got
        except wire.FrameError as e:
            raise ConnError("protocol", f"bad response from {self.addr}: {e}") from None

    def _fill(self, deadline: float) -> None:
        if self._rpos > 0:
            del self._rbuf[: self._rpos]
            self._rpos = 0
        self._set_timeout(deadline)
        try:
            chunk = self._sock.recv(_READ_CHUNK)
        except socket.timeout:
            raise ConnError("timeout", f"no answer from {self.addr} in time") from None
        except ssl.SSLError as e:
            raise ConnError("protocol", f"TLS with {self.addr}: {e}") from None
        except OSError as e:
            raise ConnError("io", f"reading from {self.addr}: {e.strerror or e}") from None
        if not chunk:
            # Mid-frame too, this is the connection failing (the server died while writing
            # its reply), not a peer speaking another protocol: the bytes that did arrive were
            # this protocol's, and the request may have been applied.
            where = " mid-frame" if self._rbuf else ""
            raise ConnError("io", f"{self.addr} closed the connection{where}")
        self._rbuf += chunk

    def recv_now(self) -> tuple[int, wire.Response] | None:
        """The next response frame if it has arrived, without waiting for one (a watch's
        changes, taken up between an application's reads); ``None`` when none has. A frame
        that has begun to arrive is waited for."""
        while True:
            got = self._take_frame()
            if got is not None:
                return got
            started = len(self._rbuf) > self._rpos
            if not started and not self._readable_now():
                return None
            self._fill(time.monotonic() + (5.0 if started else 1.0))

    def _readable_now(self) -> bool:
        """Bytes (or the end of the stream) wait on the socket, or TLS holds decrypted ones."""
        if isinstance(self._sock, ssl.SSLSocket) and self._sock.pending() > 0:
            return True
        try:
            ready, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True  # the read that follows reports what is wrong
        return bool(ready)

    def answered(self) -> bool:
        """Whether the server has answered on this connection (a whole response frame
        arrived). A connection that has not may lead to a server that accepts connections but
        never answers (a paused or hung one: its kernel still accepts)."""
        return self._answered

    def closed_by_peer(self) -> bool:
        """Whether the server has closed this idle connection. Checked before a request that
        is never resent, so that a connection the server dropped while idle (its idle
        timeout) is replaced before sending rather than discovered after. Bytes that did
        arrive are kept for :meth:`recv`."""
        if self._rpos < len(self._rbuf):
            return False
        try:
            self._sock.setblocking(False)
            try:
                chunk = self._sock.recv(_READ_CHUNK)
            finally:
                self._sock.setblocking(True)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError:
            return True
        if not chunk:
            return True
        self._rbuf += chunk
        return False


def not_the_protocol(why: str) -> str:
    """What to say of a server whose bytes (``why`` quotes the failure) are not this protocol;
    a TLS failure says enough by itself. Shared by requests and watches."""
    if why.startswith("TLS"):
        return why
    return (
        f"{why}: not the Zatt protocol (check the endpoints, and whether the servers expect "
        "TLS: tls_ca)"
    )


def back_off(last: float, deadline: float) -> float:
    """Sleeps a growing pause after ``last`` (10 ms doubling to 200 ms), never past the
    deadline; returns the pause to grow from next time. Shared by requests and watches."""
    pause = min(max(last * 2, 0.01), 0.2)
    time.sleep(max(0.0, min(deadline - time.monotonic(), pause)))
    return pause
