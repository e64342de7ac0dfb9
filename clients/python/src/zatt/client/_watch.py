"""Watching: a blocking stream of the changes to the keys under a prefix (:class:`Watch`,
from :meth:`Client.watch <zatt.client.Client.watch>`) that resumes by itself on another server
when its connection is lost or its server stops, from the revision after the last change it
received, so that the caller sees every change once, in revision order, with no gap.

Owns the watch's own connection and its resumption, as the Rust client's ``Watch`` does; the
protocol is ``docs/PROTOCOL.md``'s ("Watches"). Must not deliver a change twice or out of
order (a change below the revision it resumes from is dropped), resume past a change it has
not delivered, or hide :class:`~zatt.errors.Compacted` (a watch that cannot resume without a
gap ends with it, and the caller reloads).
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from .. import wire
from .._conn import Conn, ConnError, back_off, not_the_protocol
from ..errors import Compacted, ProtocolError, ServerError, TooLarge, Unavailable


class _Dialer(Protocol):
    """What a watch needs of the client that made it (the client's own type would make the
    two modules import each other)."""

    timeout: float
    request_timeout: float

    @property
    def endpoints(self) -> list[str]: ...

    def _dial(self, addr: str, deadline: float) -> Conn: ...


__all__ = ["Watch", "WatchStats"]

_log = logging.getLogger(__name__)


@dataclass
class WatchStats:
    """What a :class:`Watch` did behind the caller's back."""

    opens: int = 0
    """Watches opened, the first included."""
    resumes: int = 0
    """Times it resumed on a new connection after losing one."""
    overflows: int = 0
    """Times a server cut it off because its changes were not read fast enough."""


class _Retry(Exception):
    """Another server, or a later try, may do."""


class _Garbled(Exception):
    """The server answered with bytes that are not this protocol: another may do."""


class _Compacted(Exception):
    """This server no longer keeps the changes the watch needs; another may."""

    def __init__(self, oldest: int) -> None:
        super().__init__(oldest)
        self.oldest = oldest


class Watch(Iterator[wire.WatchEvent]):
    """A stream of changes under a prefix, in revision order: iterating blocks until a change
    arrives (``for event in client.watch(b"config/"): ...``). It resumes by itself (see the
    module). :class:`~zatt.errors.Compacted` ends it, after the changes received before it;
    failing to reach any server within the client's ``timeout`` raises
    :class:`~zatt.errors.Unavailable`, and iterating again tries again.

    It has a connection of its own, to ``endpoint`` or one of the client's endpoints (a
    follower serves a watch as well as the leader), and does not use the client's. Close it
    (or use it as a context manager) to end it.
    """

    def __init__(
        self,
        client: _Dialer,
        prefix: bytes,
        from_revision: int,
        *,
        endpoint: str | None = None,
        silence_timeout: float = 5.0,
    ) -> None:
        if from_revision < 1:
            raise ValueError("a watch starts from a revision of 1 or more")
        self._client = client
        self._endpoints = client.endpoints
        self._prefix = prefix
        self._preferred = endpoint
        self._silence = float(silence_timeout)
        self._next_endpoint = random.randrange(len(self._endpoints))
        self._conn: Conn | None = None
        self._watch_id = 0
        # Every change before this revision has been received (those in the queue are not
        # yet delivered); a resumption asks from here.
        self._next = from_revision
        self._queue: collections.deque[wire.WatchEvent] = collections.deque()
        self._heard_at = time.monotonic()
        self._compacted: int | None = None
        self._finished = False
        self.stats = WatchStats()
        self._open(time.monotonic() + client.timeout)

    # ----- what the caller sees ------------------------------------------------------------

    @property
    def revision(self) -> int:
        """Every change up to this revision has been delivered (or the watch started after
        it): the revision the caller's view of the prefix is complete through."""
        if self._queue:
            return self._queue[0].revision - 1
        return self._next - 1

    @property
    def connected_to(self) -> str | None:
        """The server the watch is connected to now, if any."""
        return None if self._conn is None else self._conn.addr

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> wire.WatchEvent:
        while True:
            if self._finished and not self._queue and self._compacted is None:
                raise StopIteration
            e = self.next(3600.0)
            if e is not None:
                return e

    def next(self, timeout: float | None = None) -> wire.WatchEvent | None:
        """The next change, waiting ``timeout`` seconds at most (``None``: as long as it
        takes; 0: only what has already arrived); ``None`` when none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._compacted is not None:
                oldest, self._compacted = self._compacted, None
                self._finished = True
                raise Compacted(oldest)
            if self._finished:
                return None
            if self._conn is None:
                # Resuming gets the client's whole timeout, as any request does.
                self._open(time.monotonic() + self._client.timeout)
                continue
            silent_at = self._heard_at + self._silence
            now = time.monotonic()
            try:
                if deadline is not None and deadline <= now:
                    got = self._conn.recv_now()
                else:
                    until = silent_at if deadline is None else min(deadline, silent_at)
                    got = self._recv(until, silent_at)
            except ConnError as e:
                self._lost(str(e))
                continue
            if got is not None:
                self._on_frame(*got)
            elif time.monotonic() >= silent_at:
                self._lost("no frame within the silence timeout")
            elif deadline is not None and time.monotonic() >= deadline:
                return None

    def try_next(self) -> wire.WatchEvent | None:
        """A change that has already arrived, without waiting."""
        return self.next(0)

    def wait_for(self, revision: int, timeout: float) -> bool:
        """Waits until every change up to ``revision`` has been received (changes received
        meanwhile stay queued for :meth:`next`); returns whether that happened within
        ``timeout`` seconds. A server that has not reached ``revision`` within the client's
        request timeout (a follower cut off from the leader) is left for another."""
        deadline = time.monotonic() + timeout
        patience = time.monotonic() + self._client.request_timeout
        while self._next <= revision:
            if self._compacted is not None or self._finished:
                return False
            now = time.monotonic()
            if now >= deadline:
                return False
            if self._conn is not None and now >= patience:
                self._lost(f"it has not reached revision {revision}")
                patience = now + self._client.request_timeout
            if self._conn is None:
                self._open(time.monotonic() + self._client.timeout)
                continue
            silent_at = self._heard_at + self._silence
            try:
                got = self._recv(min(deadline, silent_at, patience), silent_at)
            except ConnError as e:
                self._lost(str(e))
                continue
            if got is not None:
                self._on_frame(*got)
            elif time.monotonic() >= silent_at:
                self._lost("no frame within the silence timeout")
        return True

    def close(self) -> None:
        """Ends the watch (its connection closes; the server forgets it)."""
        self._finished = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- the connection ----------------------------------------------------------------

    def _recv(self, until: float, silent_at: float) -> tuple[int, wire.Response] | None:
        """A frame by ``until``; ``None`` if none came (a dead connection raises)."""
        assert self._conn is not None
        if until <= time.monotonic():
            return None
        try:
            return self._conn.recv(until)
        except ConnError as e:
            if e.kind == "timeout":
                return None
            raise

    def _on_frame(self, rid: int, resp: wire.Response) -> None:
        if rid != self._watch_id:
            return  # an answer to something else
        self._heard_at = time.monotonic()
        if isinstance(resp, wire.WatchEvents):
            for e in resp.events:
                if e.revision >= self._next:
                    self._next = e.revision + 1
                    self._queue.append(e)
        elif isinstance(resp, wire.WatchProgress):
            self._next = max(self._next, resp.revision + 1)
        elif isinstance(resp, wire.ErrorReply) and resp.code == 13:
            # This server no longer keeps the changes from _next (a snapshot replaced its
            # dictionary); another member may still: _open asks each before giving up.
            self._lost(f"it keeps changes from revision {resp.oldest or 0} on only")
        elif isinstance(resp, wire.ErrorReply) and resp.code == 14:
            self.stats.overflows += 1
            self._lost("cut off for reading too slowly")
        elif isinstance(resp, wire.Done):
            self._drop()
            self._finished = True
        else:
            # Shutting down, or anything else: this server will not go on; another will.
            self._lost(repr(resp))

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _lost(self, why: str) -> None:
        _log.debug(
            "watch on %s: connection lost (%s); resuming from revision %d",
            self.connected_to,
            why,
            self._next,
        )
        self._drop()
        self.stats.resumes += 1
        # Another server first: this one failed us.
        self._next_endpoint += 1

    def _open(self, deadline: float) -> None:
        """Opens the watch from ``_next`` on a server: the preferred one first, then each
        endpoint in turn, with growing pauses, until ``deadline``."""
        backoff = 0.0
        last = ""
        # Members that no longer keep the changes from _next, and the latest oldest revision
        # one of them named.
        compacted_by = 0
        compacted: int | None = None
        # Servers that answered the watch with bytes that are not this protocol, with what
        # says so: not asked again here (the Rust client's rule for servers that are no Zatt
        # server, which this client does not tell from other bytes it cannot read).
        garbled: dict[str, str] = {}
        while True:
            if self._preferred is not None:
                addr, self._preferred = self._preferred, None
            else:
                addr = self._endpoints[self._next_endpoint % len(self._endpoints)]
            if addr in garbled:
                self._next_endpoint += 1
                continue
            try:
                self._open_at(addr, deadline)
                return
            except _Garbled as e:
                garbled[addr] = not_the_protocol(str(e))
                if all(a in garbled for a in self._endpoints):
                    # Waiting cannot make any of them speak the protocol.
                    raise ProtocolError("; ".join(garbled.values())) from None
                # The next endpoint at once, as after one that is unreachable.
                self._next_endpoint += 1
                continue
            except _Compacted as e:
                compacted_by += 1
                compacted = e.oldest if compacted is None else max(compacted, e.oldest)
                self._next_endpoint += 1
                if compacted_by >= len(self._endpoints):
                    self._end_compacted(compacted)
                    return
                continue  # the next member at once: no failure to wait out
            except _Retry as e:
                last = f"{addr}: {e}"
                self._next_endpoint += 1
            if time.monotonic() >= deadline:
                if compacted is not None:
                    # No member reached was able to go on without a gap.
                    self._end_compacted(compacted)
                    return
                reason = f"cannot watch on any of {','.join(self._endpoints)} ({last})"
                if garbled:
                    reason += "; " + "; ".join(garbled.values())
                raise Unavailable(reason)
            backoff = back_off(backoff, deadline)

    def _end_compacted(self, oldest: int) -> None:
        """No member can go on without a gap: only the changes still queued can be delivered,
        then the error (at once when nothing was ever delivered or queued)."""
        self._drop()
        if not self._queue and self.stats.opens == 0:
            self._finished = True
            raise Compacted(oldest)
        self._compacted = oldest

    def _open_at(self, addr: str, deadline: float) -> None:
        c = self._client
        try:
            conn = c._dial(addr, deadline)
        except ConnError as e:
            if e.kind == "protocol":
                raise ProtocolError(str(e)) from None
            raise _Retry(str(e)) from None
        self._watch_id += 1
        rid = self._watch_id
        reply_by = min(deadline, time.monotonic() + c.request_timeout)
        try:
            conn.send(wire.Watch(self._prefix, self._next).encode(rid), reply_by)
        except ConnError as e:
            conn.close()
            raise _Retry(str(e)) from None
        try:
            got, resp = conn.recv(reply_by)
        except ConnError as e:
            conn.close()
            # Bytes that are not this protocol: this server is passed over, not the watch
            # ended (only a TLS failure while connecting ends it, as in the Rust client).
            if e.kind == "protocol":
                raise _Garbled(str(e)) from None
            raise _Retry(str(e)) from None
        if got != rid:
            conn.close()
            raise _Retry(f"answer for request {got}, not the watch")
        if isinstance(resp, wire.WatchProgress):
            self._next = max(self._next, resp.revision + 1)
            self._heard_at = time.monotonic()
            self._conn = conn
            self.stats.opens += 1
            return
        conn.close()
        if isinstance(resp, wire.ErrorReply):
            if resp.code == 13:
                raise _Compacted(resp.oldest or 0)
            if resp.code == 2:
                raise TooLarge(resp.what or "prefix", resp.limit or 0)
            if resp.code in (4, 10):
                raise ServerError(resp.name, resp.message(), detail=resp.detail)
            raise _Retry(resp.message())
        raise _Retry(f"unexpected answer {resp!r}")
