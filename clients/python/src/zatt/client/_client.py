"""The blocking :class:`Client`: finds the leader, follows ``NotLeader`` hints, and retries
through timeouts and leader changes without ever applying a write twice.

Owns the retry machinery and the session (exactly-once) logic, which follow the Rust client
and ``docs/PROTOCOL.md`` ("Sessions and exactly-once writes", "A client's retry loop"). The
bytes are ``zatt.wire``'s, the socket ``zatt._conn``'s. Must not interpret values (that is
``zatt.values``, used by the ``DistributedDict``).

With sessions on (the default) the client registers a session before its first write and
tags every write ``(session id, seq)``, seq growing by one per write. A write whose outcome is
unknown (connection lost, no answer in time, the server gave up waiting for the commit) is
sent again with the *same* tag, so the cluster applies it at most once and answers the retry
with the first attempt's reply. Should the session have expired meanwhile, the client
registers a new one and either resends the write (when no earlier attempt can have reached
the cluster) or raises :class:`~zatt.errors.SessionExpired` with ``may_have_applied``.
With sessions off, and for membership changes, a write whose outcome is unknown is never
resent. Its one attempt gets the whole operation's time, so it never goes out on a connection
whose server has not answered anything yet: a status request proves that connection first,
and a server that does not answer it in one attempt's time is left for the next endpoint.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Union

from .. import wire
from .._conn import Conn, ConnError, back_off, not_the_protocol, split_endpoint
from ..errors import (
    CasFailed,
    ConfigError,
    ConnectionFailed,
    NotLeader,
    ProtocolError,
    ServerError,
    SessionExpired,
    Timeout,
    TooLarge,
    Unavailable,
    ZattError,
)
from ..values import encode_key
from ._watch import Watch

__all__ = ["DEFAULT_ENDPOINT", "Client", "ClientStats", "KeyValue", "ReadReply"]

DEFAULT_ENDPOINT = "127.0.0.1:5254"

Key = Union[str, bytes]
Data = Union[str, bytes]
Expected = Union[bytes, str, wire.Revision, None]
PathArg = Union[str, "os.PathLike[str]"]

# Where a request must go.
_LEADER = "leader"
_ANY = "any"
# How a request may be retried after an attempt whose outcome is unknown.
_IDEMPOTENT = "idempotent"  # reads: resend freely
_TAGGED = "tagged"  # session-tagged writes: resend with the same tag
_ONCE = "once"  # untagged writes: never resend after an unknown outcome


class KeyValue(NamedTuple):
    """A key, its value and the revision (log index) of its last write."""

    key: bytes
    value: bytes
    revision: int


class ReadReply(NamedTuple):
    """A read's answer: the value (``None`` when absent), its revision (0 when absent), and
    the log position the serving server had applied (how fresh a stale read is)."""

    value: bytes | None
    revision: int
    applied_index: int


@dataclass
class ClientStats:
    """What the client did behind the caller's back."""

    connects: int = 0
    """Connections opened."""
    hints_followed: int = 0
    """``NotLeader`` hints followed to another server."""
    resent_after_unknown_outcome: int = 0
    """Attempts sent again after one whose outcome was unknown."""


def _data(value: Data, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def _endpoint_list(endpoints: str | Iterable[str]) -> list[str]:
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out = []
    for e in items:
        if not isinstance(e, str):
            raise ConfigError(f"endpoints are 'HOST:PORT' strings, not {type(e).__name__}")
        e = e.strip()
        if not e:
            continue
        try:
            split_endpoint(e)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        out.append(e)
    if not out:
        raise ConfigError("no endpoints given")
    return out


class _Attempts:
    """What the retry loop remembers about its failures, to report the right error."""

    def __init__(self) -> None:
        self.ambiguous = False
        self.last_failure: tuple[str, str] | None = None
        self.backoff = 0.0

    def back_off(self, deadline: float) -> None:
        """Sleeps a growing pause (see :func:`back_off`), never past the deadline."""
        self.backoff = back_off(self.backoff, deadline)

    def give_up(self, endpoints: list[str]) -> ZattError:
        m = self.ambiguous
        kind, why = self.last_failure or ("no_reply", "")
        if kind == "no_reply":
            return Timeout("timed out waiting for a reply", may_have_applied=m)
        if kind == "connect":
            return Unavailable(
                f"cluster unavailable: cannot connect to any of {','.join(endpoints)} ({why})",
                may_have_applied=m,
            )
        if kind == "no_leader":
            return Unavailable(f"cluster unavailable: {why}", may_have_applied=m)
        if kind == "protocol":
            return ProtocolError(not_the_protocol(why), may_have_applied=m)
        return Unavailable(
            f"cluster unavailable: connections keep failing ({why})", may_have_applied=m
        )


def _conn_error(e: ConnError, may_have_applied: bool) -> ZattError:
    if e.kind == "timeout":
        return Timeout(str(e), may_have_applied=may_have_applied)
    if e.kind == "protocol":
        return ProtocolError(str(e), may_have_applied=may_have_applied)
    return ConnectionFailed(f"connection failed: {e}", may_have_applied=may_have_applied)


def _unexpected(resp: wire.Response, may_have_applied: bool) -> ProtocolError:
    return ProtocolError(f"unexpected response: {resp!r}", may_have_applied=may_have_applied)


def _server_error(err: wire.ErrorReply) -> ZattError:
    if err.code == 2:
        return TooLarge(err.what or "request", err.limit or 0)
    if err.code == 1:
        return NotLeader(err.leader, err.leader_addr)
    return ServerError(
        err.name, err.message(), detail=err.detail, may_have_applied=err.may_have_applied
    )


class Client:
    """A blocking client for a Zatt cluster, holding one connection.

    ``endpoints``: ``"host:port"`` strings (a list, or one string with commas); any member
    will do, the client finds the leader. ``timeout`` bounds each operation, retries
    included; ``request_timeout`` one attempt; ``connect_timeout`` one connection (and its
    TLS handshake). ``tls_ca`` turns TLS on, verifying servers against that PEM file;
    ``tls_cert``/``tls_key`` present a client certificate; ``tls_server_name`` overrides the
    name verified (default: the endpoint's host). ``sessions`` (default on) makes retried
    writes apply exactly once. ``max_frame_bytes`` bounds what one response may make the
    client buffer.

    The client is safe to share between threads (one request at a time goes through its
    connection); give each thread its own for parallelism. Use it as a context manager to
    close the connection::

        with Client("127.0.0.1:5254") as c:
            c.put("greeting", "hello")
            assert c.get("greeting") == b"hello"
    """

    def __init__(
        self,
        endpoints: str | Iterable[str] = DEFAULT_ENDPOINT,
        *,
        timeout: float = 10.0,
        request_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        tls_ca: PathArg | None = None,
        tls_cert: PathArg | None = None,
        tls_key: PathArg | None = None,
        tls_server_name: str | None = None,
        sessions: bool = True,
        max_frame_bytes: int = 64 << 20,
        scan_page_size: int = 1000,
    ) -> None:
        self._endpoints = _endpoint_list(endpoints)
        if timeout <= 0 or request_timeout <= 0 or connect_timeout <= 0:
            raise ConfigError("timeouts must be positive")
        if max_frame_bytes < wire.FRAME_HEADER_BYTES:
            raise ConfigError("max_frame_bytes is smaller than a frame header")
        self.timeout = float(timeout)
        self.request_timeout = float(request_timeout)
        self.connect_timeout = float(connect_timeout)
        self.sessions = sessions
        self.max_frame_bytes = max_frame_bytes
        self.scan_page_size = max(1, min(int(scan_page_size), 0xFFFFFFFF))
        self._tls = _tls_context(tls_ca, tls_cert, tls_key)
        self._tls_server_name = tls_server_name
        self._conn: Conn | None = None
        self._next_endpoint = 0
        self._leader_hint: str | None = None
        # The last leader hint that could not be dialled, and why: said if the call fails.
        self._unreached_hint: tuple[str, str] | None = None
        self._session: list[int] | None = None  # [id, next seq]
        self._next_request_id = 1
        self._lock = threading.RLock()
        self.stats = ClientStats()
        # Connect now, so that a wrong endpoint or certificate shows at once.
        deadline = time.monotonic() + self.timeout
        attempts = _Attempts()
        while True:
            try:
                self._ensure_conn(deadline)
                return
            except ConnError as e:
                if e.kind == "protocol":
                    raise ProtocolError(str(e)) from None
                if e.kind != "deadline" or attempts.last_failure is None:
                    attempts.last_failure = ("connect", str(e))
            if time.monotonic() >= deadline:
                raise attempts.give_up(self._endpoints)
            attempts.back_off(deadline)

    # ----- the connection ------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """The endpoints this client was given."""
        return list(self._endpoints)

    @property
    def connected_to(self) -> str | None:
        """The endpoint this client is connected to now, if any."""
        c = self._conn
        return None if c is None else c.addr

    def close(self) -> None:
        """Closes the connection. The client reconnects if used again."""
        with self._lock:
            self._drop_conn()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(endpoints={self._endpoints!r}, connected_to={self.connected_to!r})"

    # ----- reads -------------------------------------------------------------------------

    def get(self, key: Key, *, stale: bool = False) -> bytes | None:
        """The value of ``key`` (``None`` when absent). Linearizable: it reflects every write
        acknowledged before the call. ``stale=True`` asks whichever server the client is
        connected to, without a round through the leader: faster, possibly behind."""
        return self.read(key, stale=stale).value

    def read(self, key: Key, *, stale: bool = False) -> ReadReply:
        """Like :meth:`get`, with the value's revision and the serving server's applied
        index."""
        req = wire.Get(encode_key(key), stale)
        resp = self._call(req, _ANY if stale else _LEADER, _IDEMPOTENT)
        if isinstance(resp, wire.Value):
            return ReadReply(resp.value, resp.revision, resp.applied_index)
        raise _unexpected(resp, False)

    def len(self, *, stale: bool = False) -> int:
        """The number of keys."""
        resp = self._call(wire.Len(stale), _ANY if stale else _LEADER, _IDEMPOTENT)
        if isinstance(resp, wire.LenReply):
            return resp.len
        raise _unexpected(resp, False)

    def scan(
        self,
        prefix: Key = b"",
        *,
        start_after: Key | None = None,
        limit: int | None = None,
        stale: bool = False,
        page_size: int | None = None,
    ) -> Iterator[KeyValue]:
        """The keys starting with ``prefix``, in byte order, as :class:`KeyValue` items,
        fetched a page at a time. Each page is consistent on its own; the whole scan is not
        one snapshot. ``start_after`` resumes after that key; ``limit`` stops after that
        many keys."""
        for page in self._pages(prefix, start_after, limit, stale, page_size):
            yield from page.items_kv

    def dump(self, *, stale: bool = False) -> dict[bytes, bytes]:
        """Every key and value, in key order."""
        return {kv.key: kv.value for kv in self.scan(stale=stale)}

    def status(self) -> wire.Status:
        """The status of the server the client is connected to (any role)."""
        resp = self._call(wire.StatusRequest(), _ANY, _IDEMPOTENT)
        if isinstance(resp, wire.StatusReply):
            return resp.status
        raise _unexpected(resp, False)

    def status_of(self, endpoint: str) -> wire.Status:
        """The status of the server at ``endpoint``, member or not (a server started with
        ``--join`` answers too), over a connection of its own with this client's TLS
        settings."""
        try:
            split_endpoint(endpoint)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        deadline = time.monotonic() + self.timeout
        attempts = _Attempts()
        while True:
            try:
                conn = self._dial(endpoint, deadline)
                try:
                    with self._lock:
                        rid = self._next_request_id
                        self._next_request_id += 1
                    conn.send(wire.StatusRequest().encode(rid), deadline)
                    while True:
                        attempt_deadline = min(deadline, time.monotonic() + self.request_timeout)
                        got, resp = conn.recv(attempt_deadline)
                        if got == rid:
                            break
                finally:
                    conn.close()
            except ConnError as e:
                if e.kind == "protocol":
                    raise ProtocolError(str(e)) from None
                attempts.last_failure = ("connect", str(e))
                if time.monotonic() >= deadline:
                    raise attempts.give_up([endpoint]) from None
                attempts.back_off(deadline)
                continue
            if isinstance(resp, wire.StatusReply):
                return resp.status
            if isinstance(resp, wire.ErrorReply):
                raise _server_error(resp)
            raise _unexpected(resp, False)

    def members(self) -> list[wire.Member]:
        """The cluster's members, as the leader knows them."""
        with self._lock:
            self._connect_to_leader()
            resp = self._call(wire.Members(), _ANY, _IDEMPOTENT)
        if isinstance(resp, wire.MembersReply):
            return resp.members
        raise _unexpected(resp, False)

    def watch(
        self,
        prefix: Key = b"",
        from_revision: int = 0,
        *,
        endpoint: str | None = None,
        silence_timeout: float = 5.0,
    ) -> Watch:
        """Watches the keys starting with ``prefix`` from revision ``from_revision`` on (0:
        only changes made from now on; the client asks the cluster its revision with a
        linearizable read first). Returns once the watch is in place on a server: every change
        from that revision on will then be delivered, once each, in revision order, as
        :class:`~zatt.wire.WatchEvent` items. ``endpoint``: the server to watch on first
        (any member serves a watch; default: one of the client's endpoints at random, so that
        watchers spread over the cluster). ``silence_timeout``: a connection that brings
        nothing for this long (servers send a progress notification every second on a quiet
        watch) is taken for dead and the watch resumes elsewhere. Raises
        :class:`~zatt.errors.Compacted` when the servers no longer keep the changes from
        ``from_revision`` on. See :class:`~zatt.client.Watch`::

            for event in client.watch("config/"):
                print(event.revision, event.kind, event.key, event.value)
        """
        if from_revision < 0:
            raise ConfigError("from_revision must be 0 (from now) or a revision")
        if from_revision == 0:
            resp = self._call(wire.Len(False), _LEADER, _IDEMPOTENT)
            if not isinstance(resp, wire.LenReply):
                raise _unexpected(resp, False)
            from_revision = resp.applied_index + 1
        return Watch(
            self,
            encode_key(prefix),
            from_revision,
            endpoint=endpoint,
            silence_timeout=silence_timeout,
        )

    # ----- writes ------------------------------------------------------------------------

    def put(self, key: Key, value: Data) -> int:
        """Sets ``key`` to ``value``; returns the write's revision."""
        resp = self._write(wire.Put(encode_key(key), _data(value, "value")))
        if isinstance(resp, wire.Written):
            return resp.revision
        raise _unexpected(resp, True)

    def delete(self, key: Key) -> bool:
        """Removes ``key``; returns whether it existed."""
        return self.delete_with_revision(key)[0]

    def delete_with_revision(self, key: Key) -> tuple[bool, int]:
        """Removes ``key``; returns whether it existed and the delete's revision."""
        resp = self._write(wire.Delete(encode_key(key)))
        if isinstance(resp, wire.Deleted):
            return resp.existed, resp.revision
        raise _unexpected(resp, True)

    def cas(self, key: Key, expected: Expected, new: Data | None) -> int:
        """Compare-and-swap: writes ``new`` (deletes the key when ``None``) if ``expected``
        holds, and returns the write's revision. ``expected`` is the value the key must hold
        (``bytes`` or ``str``), ``None`` for "the key is absent", or a
        :class:`~zatt.wire.Revision` the key's last write must have. Raises
        :class:`~zatt.errors.CasFailed` (with the key's current value) when it does not
        hold."""
        if expected is None or isinstance(expected, wire.Revision):
            expect: bytes | wire.Revision | None = expected
        else:
            expect = _data(expected, "expected value")
        new_b = None if new is None else _data(new, "new value")
        resp = self._write(wire.Cas(encode_key(key), expect, new_b))
        if isinstance(resp, wire.CasOk):
            return resp.revision
        if isinstance(resp, wire.CasFailedReply):
            raise CasFailed(resp.current)
        raise _unexpected(resp, True)

    def member_add(self, id: int, addr: str, *, learner: bool = False) -> None:
        """Adds server ``id`` at ``addr`` (its ``host:port``), started with
        ``zattd --join``. As a voter by default: the leader adds it as a learner and promotes
        it once it has caught up, answering only then."""
        self._admin(wire.MemberAdd(id, addr, learner))

    def member_promote(self, id: int) -> None:
        """Makes learner ``id`` a voter (refused until it has caught up)."""
        self._admin(wire.MemberPromote(id))

    def member_remove(self, id: int) -> None:
        self._admin(wire.MemberRemove(id))

    def transfer_leader(self, to: int | None = None) -> None:
        """Hands leadership to ``to``, or to the most caught-up voter."""
        self._admin(wire.TransferLeader(to))

    def register_session(self) -> int:
        """Registers a fresh session and returns its id (for applications that tag their
        own writes)."""
        # A retried registration creates an orphan session that expires by itself.
        resp = self._call(wire.RegisterSession(), _LEADER, _IDEMPOTENT)
        if isinstance(resp, wire.SessionRegistered):
            return resp.id
        raise _unexpected(resp, True)

    # ----- scans -------------------------------------------------------------------------

    def _pages(
        self,
        prefix: Key,
        start_after: Key | None,
        limit: int | None,
        stale: bool,
        page_size: int | None,
    ) -> Iterator[_Page]:
        prefix_b = encode_key(prefix)
        after = None if start_after is None else encode_key(start_after)
        size = self.scan_page_size if page_size is None else max(1, min(page_size, 0xFFFFFFFF))
        remaining = limit
        route = _ANY if stale else _LEADER
        while remaining is None or remaining > 0:
            n = size if remaining is None else min(size, remaining)
            resp = self._call(wire.Scan(prefix_b, n, after, stale), route, _IDEMPOTENT)
            if not isinstance(resp, wire.ScanPage):
                raise _unexpected(resp, False)
            items = [KeyValue(k, v, r) for k, v, r in resp.items]
            if remaining is not None:
                remaining -= len(items)
            yield _Page(items, resp.applied_index)
            if not resp.more:
                return
            if not items:
                # Nothing to resume after: stopping would truncate the scan silently.
                raise ProtocolError("scan page empty yet more follow")
            after = items[-1].key

    # ----- the retry machinery -------------------------------------------------------------

    def _admin(self, req: wire.Request) -> None:
        resp = self._call(req, _LEADER, _ONCE)
        if not isinstance(resp, wire.Done):
            raise _unexpected(resp, True)

    def _write(self, req: wire.Put | wire.Delete | wire.Cas) -> wire.Response:
        """A dictionary write, tagged with the session when sessions are on."""
        with self._lock:
            if not self.sessions:
                return self._call(req, _LEADER, _ONCE)
            # Set once any attempt of this write may have been applied; never cleared.
            ambiguous = [False]
            renewed = False
            while True:
                if self._session is None:
                    # Only reached before any attempt or after one that certainly applied
                    # nothing, so a failure here leaves the write certainly unapplied.
                    self._session = [self.register_session(), 1]
                session = self._session
                req.session = (session[0], session[1])
                # Gaps in seq are allowed, so a seq is spent whatever the outcome.
                session[1] += 1
                try:
                    return self._call(req, _LEADER, _TAGGED, ambiguous)
                except ServerError as e:
                    if e.kind != "session_expired":
                        raise
                self._session = None
                if ambiguous[0] or renewed:
                    # Register now so the next write need not; if that fails, the next
                    # write registers by itself.
                    with contextlib.suppress(ZattError):
                        self._session = [self.register_session(), 1]
                    raise SessionExpired(
                        "session expired while the write's outcome was unknown",
                        may_have_applied=ambiguous[0],
                    )
                # Nothing of this write can have been applied: send it again, once, under a
                # new session.
                renewed = True

    def _call(
        self,
        req: wire.Request,
        route: str,
        retry: str,
        ambiguous: list[bool] | None = None,
    ) -> wire.Response:
        """Sends ``req`` until it gets a definite answer or the operation's timeout passes.
        ``ambiguous[0]`` is set once an attempt's outcome is unknown (it may have been
        applied)."""
        with self._lock:
            return self._call_locked(req, route, retry, ambiguous if ambiguous else [False])

    def _call_locked(
        self, req: wire.Request, route: str, retry: str, ambiguous: list[bool]
    ) -> wire.Response:
        deadline = time.monotonic() + self.timeout
        attempts = _Attempts()
        # Hint hops since the last pause: hints are followed at once, but a ring of stale
        # hints must not spin.
        hops = 0
        is_write = retry != _IDEMPOTENT
        unknown_outcome = False
        # Servers whose bytes were not this protocol: once every endpoint has sent such bytes,
        # waiting for the deadline cannot help.
        garbled: set[str] = set()
        while True:
            attempts.ambiguous = ambiguous[0] and is_write
            if time.monotonic() >= deadline:
                raise attempts.give_up(self._endpoints)
            if retry == _ONCE and self._conn is not None and self._conn.closed_by_peer():
                self._drop_conn()
            try:
                self._ensure_conn(deadline)
            except ConnError as e:
                if e.kind == "protocol":
                    raise ProtocolError(str(e), may_have_applied=attempts.ambiguous) from None
                if e.kind != "deadline" or attempts.last_failure is None:
                    attempts.last_failure = ("connect", str(e))
                attempts.back_off(deadline)
                continue
            # The one attempt of a request sent only once gets the whole operation's time, so
            # it must not go to a server that accepts connections but does not answer (a
            # paused or hung one: its kernel still accepts). A connection that has not
            # answered yet is proved first with a status request, which, unlike that request,
            # may be sent elsewhere.
            if (
                retry == _ONCE
                and self._conn is not None
                and not self._conn.answered()
                and not self._prove_conn(deadline, attempts, garbled)
            ):
                continue
            if unknown_outcome:
                self.stats.resent_after_unknown_outcome += 1
                unknown_outcome = False
            # A request that will not be resent after an unknown outcome gets the whole
            # operation's time for its one attempt: waiting longer buys a definite answer.
            if retry == _ONCE:
                attempt_deadline = deadline
            else:
                attempt_deadline = min(deadline, time.monotonic() + self.request_timeout)
            rid = self._next_request_id
            self._next_request_id += 1
            try:
                resp = self._round_trip(rid, req, attempt_deadline)
            except ConnError as e:
                # The request may have reached the server before the connection failed.
                if e.kind == "protocol" and self._conn is not None:
                    garbled.add(self._conn.addr)
                    # Asking it again cannot change its bytes, and its kernel accepts
                    # connections, so reconnecting would pick it every time: the next
                    # attempt goes to the next endpoint, and the whole list gets its turn.
                    self._leave_endpoint(self._conn.addr)
                if e.kind == "timeout" and self._conn is not None:
                    # No reply in time: a paused or hung server (its kernel still accepts
                    # connections) or one cut off. Resend elsewhere, or it alone would hold
                    # every attempt of this operation, and of the next.
                    self._leave_endpoint(self._conn.addr)
                self._drop_conn()
                unknown_outcome = True
                if is_write:
                    ambiguous[0] = True
                if retry == _ONCE:
                    raise _conn_error(e, True) from None
                if e.kind == "timeout":
                    attempts.last_failure = ("no_reply", str(e))
                elif len(garbled) >= len(set(self._endpoints)):
                    raise ProtocolError(
                        not_the_protocol(str(e)), may_have_applied=ambiguous[0] and is_write
                    ) from None
                else:
                    attempts.last_failure = (
                        "protocol" if e.kind == "protocol" else "dropped",
                        str(e),
                    )
                    attempts.back_off(deadline)
                continue
            if not isinstance(resp, wire.ErrorReply):
                return resp
            code = resp.code
            if code == 1:  # not_leader
                if route == _ANY:
                    raise NotLeader(resp.leader, resp.leader_addr)
                current = self.connected_to
                if resp.leader_addr is not None and resp.leader_addr != current:
                    unreached = self._unreached_hint
                    if unreached is not None and unreached[0] == resp.leader_addr:
                        # Said if the call fails: a bare timeout would hide it.
                        attempts.last_failure = (
                            "no_leader",
                            f"the servers name the leader {resp.leader_addr}, which this "
                            f"client cannot reach ({unreached[1]}): list the leader's address "
                            "as this client reaches it among the endpoints, or check the "
                            "addresses in the servers' --cluster",
                        )
                    self._leader_hint = resp.leader_addr
                    self._drop_conn()
                    self.stats.hints_followed += 1
                    hops += 1
                    if hops > len(self._endpoints) + 1:
                        hops = 0
                        attempts.back_off(deadline)
                else:
                    # No leader known: an election under way, or this server is cut off from
                    # its peers. The next endpoint after a pause, not this one again, or a
                    # partition that leaves this server reachable stalls the client until it
                    # heals.
                    self._drop_conn()
                    self._leader_hint = None
                    self._skip_endpoint()
                    attempts.last_failure = (
                        "no_leader",
                        "no leader elected (is a majority of servers up?)",
                    )
                    attempts.back_off(deadline)
            elif code == 9:  # unavailable: this server cannot serve it now; another may
                self._drop_conn()
                self._skip_endpoint()
                attempts.last_failure = ("no_leader", resp.detail or "unavailable")
                attempts.back_off(deadline)
            elif code in (3, 5):  # busy, too_many_connections
                if code == 5:
                    self._drop_conn()
                attempts.last_failure = ("no_leader", resp.message())
                attempts.back_off(deadline)
            elif code in (8, 12):  # timeout, shutting_down: the server does not know
                if is_write:
                    ambiguous[0] = True
                if retry == _ONCE:
                    raise _server_error(resp)
                self._drop_conn()
                unknown_outcome = True
                attempts.last_failure = ("no_reply", resp.message())
                attempts.back_off(deadline)
            else:
                # too_large, session_expired (handled by _write), stale_request, invalid,
                # conf_change, too_many_in_flight: definite answers.
                raise _server_error(resp)

    def _prove_conn(self, deadline: float, attempts: _Attempts, garbled: set[str]) -> bool:
        """Asks the current connection's server its status, within one attempt's time;
        whether it answered. When it did not, the connection is dropped and the failure
        noted as a status request's would be (no reply: the next reconnection starts at the
        endpoint after it, and the loop goes round at once; bytes that are not this protocol:
        the same, after a pause, ending the call once every endpoint has sent such bytes; a
        dropped connection: round again after a pause). Nothing of the request it stands
        before has been sent then."""
        conn = self._conn
        assert conn is not None
        rid = self._next_request_id
        self._next_request_id += 1
        probe_deadline = min(deadline, time.monotonic() + self.request_timeout)
        try:
            resp = self._round_trip(rid, wire.StatusRequest(), probe_deadline)
        except ConnError as e:
            self._drop_conn()
            if e.kind == "timeout":
                self._leave_endpoint(conn.addr)
                attempts.last_failure = ("no_reply", str(e))
                return False
            if e.kind == "protocol":
                garbled.add(conn.addr)
                self._leave_endpoint(conn.addr)
                if len(garbled) >= len(set(self._endpoints)):
                    raise ProtocolError(
                        not_the_protocol(str(e)), may_have_applied=attempts.ambiguous
                    ) from None
                attempts.last_failure = ("protocol", str(e))
            else:
                attempts.last_failure = ("dropped", str(e))
            attempts.back_off(deadline)
            return False
        if isinstance(resp, wire.ErrorReply) and resp.code == 5:
            # too_many_connections, about the connection itself: the server closes it, so
            # the request must not follow on it (its failure would read as an unknown
            # outcome); a new connection after a pause, as for any request answered so.
            self._drop_conn()
            attempts.last_failure = ("no_leader", resp.message())
            attempts.back_off(deadline)
            return False
        # Any other answer, an error included, shows a server that answers.
        return True

    def _round_trip(self, rid: int, req: wire.Request, deadline: float) -> wire.Response:
        """One attempt on the current connection: send, then wait for the reply with this
        id (replies to earlier, abandoned attempts are skipped)."""
        conn = self._conn
        assert conn is not None
        try:
            frame = req.encode(rid)
        except (ValueError, OverflowError, struct.error) as e:
            raise ConfigError(f"cannot encode the request: {e}") from None
        if len(frame) > self.max_frame_bytes:
            raise TooLarge("frame", self.max_frame_bytes)
        conn.send(frame, deadline)
        while True:
            got, resp = conn.recv(deadline)
            if got == rid:
                return resp
            if got == 0 and isinstance(resp, wire.ErrorReply):
                # About the connection itself (TooManyConnections): the request was not read.
                return resp

    def _connect_to_leader(self) -> wire.Status:
        """Connects to the server that says it leads: asks the connected server's status and
        follows the leader it names. For requests every server answers from its own view."""
        deadline = time.monotonic() + self.timeout
        attempts = _Attempts()
        while True:
            s = self.status()
            if s.role == "leader":
                return s
            if s.leader_addr is not None and s.leader_addr != self.connected_to:
                self._leader_hint = s.leader_addr
                self.stats.hints_followed += 1
            else:
                # No leader known (an election under way, a server cut off from its peers or
                # not yet added to the cluster): ask the next endpoint, as a request for the
                # leader does, not this one again, or it alone holds the call until the
                # timeout while the others could name the leader.
                self._skip_endpoint()
                attempts.last_failure = (
                    "no_leader",
                    "no leader elected (is a majority of servers up?)",
                )
            self._drop_conn()
            if time.monotonic() >= deadline:
                raise attempts.give_up(self._endpoints)
            attempts.back_off(deadline)

    def _drop_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _leave_endpoint(self, addr: str) -> None:
        """The server at ``addr`` failed to answer: when the next reconnection would start at
        it, it starts at the endpoint after it instead (``_ensure_conn`` stays with the
        endpoint that last accepted a connection, and a paused process's kernel still accepts
        them). A leader reached through a hint is not where reconnections start, so nothing
        moves then: the endpoint in turn is tried next."""
        n = len(self._endpoints)
        if n and self._endpoints[self._next_endpoint % n] == addr:
            self._next_endpoint = (self._next_endpoint + 1) % n

    def _skip_endpoint(self) -> None:
        """The next reconnection starts from the endpoint after the one in use."""
        n = len(self._endpoints)
        if n:
            self._next_endpoint = (self._next_endpoint + 1) % n

    def _ensure_conn(self, deadline: float) -> None:
        """Connects if not connected: first to the hinted leader, then to each endpoint."""
        if self._conn is not None:
            return
        last: ConnError | None = None
        hint = self._leader_hint
        self._leader_hint = None
        if hint is not None:
            try:
                self._conn = self._dial(hint, deadline)
                self._unreached_hint = None
                return
            except ConnError as e:
                self._unreached_hint = (hint, str(e))
                # Whatever the failure, a TLS one included: a hint is a server's word, possibly
                # stale, not the caller's configuration, and the endpoints may serve (the
                # leader changes, or the server asked becomes it). As the Rust client does,
                # only an endpoint's own TLS failure ends the call. Not back to the server that
                # named it, which would name it again until the timeout, but on to the other
                # endpoints, among which the leader may be (under an address this client can
                # reach: the servers' own may be one seen from elsewhere).
                self._skip_endpoint()
                last = e
        n = len(self._endpoints)
        for _ in range(n):
            if time.monotonic() >= deadline:
                break
            i = self._next_endpoint % n
            self._next_endpoint = (i + 1) % n
            try:
                self._conn = self._dial(self._endpoints[i], deadline)
                # Stay with a working endpoint for the next reconnection too.
                self._next_endpoint = i
                return
            except ConnError as e:
                if e.kind == "protocol":
                    raise
                last = e
        # "deadline": nothing could be tried; the caller keeps the reason of its last try.
        raise last or ConnError("deadline", "no endpoint could be tried before the deadline")

    def _dial(self, addr: str, deadline: float) -> Conn:
        self.stats.connects += 1
        timeout = max(min(self.connect_timeout, deadline - time.monotonic()), 0.001)
        try:
            return Conn(addr, timeout, self._tls, self._tls_server_name, self.max_frame_bytes)
        except ValueError as e:
            # A leader hint (or a watch's preferred endpoint) the client cannot parse: a
            # server this client cannot reach, as the Rust client takes it, not one that
            # speaks another protocol.
            raise ConnError("io", f"bad server address {addr!r}: {e}") from None


class _Page:
    __slots__ = ("applied_index", "items_kv")

    def __init__(self, items: list[KeyValue], applied_index: int) -> None:
        self.items_kv = items
        self.applied_index = applied_index


def _tls_context(
    ca: PathArg | None, cert: PathArg | None, key: PathArg | None
) -> ssl.SSLContext | None:
    if ca is None:
        if cert is not None or key is not None:
            raise ConfigError("tls_cert and tls_key need tls_ca (the servers' CA)")
        return None
    if (cert is None) != (key is None):
        raise ConfigError("tls_cert and tls_key go together")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=os.fspath(ca))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"{os.fspath(ca)}: not a usable CA certificate file ({e})") from None
    if cert is not None and key is not None:
        try:
            ctx.load_cert_chain(os.fspath(cert), os.fspath(key))
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{os.fspath(cert)}: client certificate refused ({e})") from None
    return ctx
