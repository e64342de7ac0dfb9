"""``DistributedDict``: the original Zatt's client, used exactly as it was::

    >>> from zatt.client.distributedDict import DistributedDict
    >>> d = DistributedDict('127.0.0.1', 5254)
    >>> d['hello'] = 'world'
    >>> d
    {'hello': 'world'}

A ``MutableMapping`` whose reads are served from a local copy of the whole dictionary,
refreshed from the cluster according to a refresh policy (``zatt.client.refresh_policies``),
and whose writes always go to the cluster (and update the local copy at once). Owns the local
copy and the refresh decision. Must not talk to the cluster except through its
:class:`~zatt.client.Client`, nor give values a meaning of its own: that is ``zatt.values``'s
(the value conventions of ``docs/PROTOCOL.md``).

A refresh reloads the *whole* dictionary, as the original did: meant for small data read
often and written rarely. With :class:`~zatt.client.refresh_policies.RefreshPolicyWatch` the
dict loads once and then follows the cluster's change stream instead (a watch on every key):
the copy is always the dictionary's state at one revision, reads never go back in time, a
read sees the dict's own writes (waiting for their change if it must), and ``on_change``
hooks see each change. Refreshes are linearizable by default, so with the default
``RefreshPolicyAlways`` every read sees every write acknowledged before it, by any client.
``stale_refresh=True`` lets whichever server the dict is connected to answer a refresh
without a round through the leader: cheaper for the leader, but a read may then miss writes
other clients had already been told were done (the answering server may lag behind), so
``Always`` then means "as fresh as that server", not "the latest". Either way a refresh never
goes back in time: if the answering server has not yet applied this dict's own last write,
or the state its previous refresh saw, the refresh is redone linearizably.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from typing import Any, Callable, NamedTuple, TypeVar, Union

from .. import wire
from .._conn import split_endpoint
from ..errors import (
    Compacted,
    ConfigError,
    ConnectionFailed,
    NotFound,
    Timeout,
    Unavailable,
)
from ..values import decode_key, decode_value, encode_key, encode_value
from ._client import Client, PathArg
from ._watch import Watch
from .refresh_policies import RefreshPolicy, RefreshPolicyAlways, RefreshPolicyWatch

__all__ = ["Change", "DistributedDict"]

Key = Union[str, bytes]
_T = TypeVar("_T")


class Change(NamedTuple):
    """One change an ``on_change`` hook is told about: ``kind`` is ``"put"`` or
    ``"delete"``; ``key`` and ``value`` are as the dict shows them (``value`` is ``None`` for a
    delete); ``revision`` is the revision of the write."""

    kind: str
    key: Key
    value: Any
    revision: int


def _endpoint(addr: str, port: int) -> str:
    if ":" in addr and not addr.startswith("["):
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"


def _same_endpoint(a: str, b: str) -> bool:
    try:
        return split_endpoint(a) == split_endpoint(b)
    except ValueError:
        return a == b


class DistributedDict(MutableMapping[Key, Any]):
    """A map-like view of the cluster's dictionary with a local copy (see the module).

    ``addr``/``port``: any member of the cluster (more with ``endpoints``); the client finds
    the leader. ``append_retry_attempts``: how many times a write is attempted in all; one is
    attempted again only when the previous attempt certainly did not apply (the client
    underneath already retries within its ``timeout``, exactly once, with sessions).
    ``refresh_policy``: when reads reload the local copy (default: before every read).
    ``stale_refresh``: let refreshes be served without a round through the leader (see the
    module for what it gives up). ``client``: use this :class:`~zatt.client.Client` instead
    of making one (then ``addr``, ``port``, ``endpoints``, ``timeout`` and the TLS options
    are ignored).

    Keys are ``str`` or ``bytes`` (``str`` travels as UTF-8, and keys read back as ``str``
    when they are UTF-8). Values are ``str``, ``bytes``, or what JSON carries (``int``,
    ``float``, ``bool``, ``None``, lists, dicts), and read back as they were written.
    """

    def __init__(
        self,
        addr: str = "127.0.0.1",
        port: int = 5254,
        append_retry_attempts: int = 3,
        refresh_policy: RefreshPolicy | None = None,
        *,
        endpoints: Iterable[str] = (),
        stale_refresh: bool = False,
        timeout: float = 10.0,
        tls_ca: PathArg | None = None,
        tls_cert: PathArg | None = None,
        tls_key: PathArg | None = None,
        client: Client | None = None,
    ) -> None:
        super().__init__()
        if client is None:
            client = Client(
                [_endpoint(addr, port), *endpoints],
                timeout=timeout,
                tls_ca=tls_ca,
                tls_cert=tls_cert,
                tls_key=tls_key,
            )
        self.client = client
        self.append_retry_attempts = append_retry_attempts
        self.refresh_policy: RefreshPolicy = (
            refresh_policy if refresh_policy is not None else RefreshPolicyAlways()
        )
        self.stale_refresh = stale_refresh
        self.refresh_count = 0
        """How many times the local copy has been reloaded."""
        self._local: dict[Key, Any] = {}
        self._loaded = False
        self._reads_since_refresh = 0
        self._last_refresh = 0.0
        # The log position the local copy must not fall behind: the highest of this dict's
        # own write revisions and the applied index of its last refresh.
        self._floor_index = 0
        self._clock: Callable[[], float] = time.monotonic
        self._lock = threading.RLock()
        # Under RefreshPolicyWatch: the change stream, the hooks, where the stream goes first.
        self._watch: Watch | None = None
        self._hooks: list[Callable[[Change], None]] = []
        self.watch_endpoint: str | None = None
        """The server the change stream of ``RefreshPolicyWatch`` goes to first (any member
        serves it; ``None``: one of the client's endpoints at random). Read at each load."""
        # Load now, as the original did, so that a wrong address shows at once.
        self.refresh(force=True)

    # ----- refreshing ------------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        """Reloads the local copy: now when ``force``, else when the policy says so (under
        ``RefreshPolicyWatch``, a forced refresh loads again and restarts the stream)."""
        with self._lock:
            if isinstance(self.refresh_policy, RefreshPolicyWatch):
                if force or self._watch is None:
                    self._watch_load()
                return
            if force or self._due():
                self._reload()

    def _due(self) -> bool:
        if not self._loaded:
            return True
        age = self._clock() - self._last_refresh
        return self.refresh_policy.due(self._reads_since_refresh, age)

    def _reload(self) -> None:
        local, applied, _ = self._load(self.stale_refresh)
        if self.stale_refresh and applied < self._floor_index:
            # The answering server lags behind what this dict has already seen.
            local, applied, _ = self._load(False)
        self._local = local
        self._mark_loaded(applied)

    def _load(self, stale: bool) -> tuple[dict[Key, Any], int, int]:
        """The whole dictionary, page by page: the copy, the revision of its oldest page (a
        multi-page load is only as fresh as that; 0 when empty) and of its newest."""
        local: dict[Key, Any] = {}
        low: int | None = None
        high = 0
        for page in self.client._pages(b"", None, None, stale, None):
            for kv in page.items_kv:
                local[decode_key(kv.key)] = decode_value(kv.value)
            low = page.applied_index if low is None else min(low, page.applied_index)
            high = max(high, page.applied_index)
        return local, low or 0, high

    def _mark_loaded(self, applied: int) -> None:
        """The copy now stands for the dictionary as of ``applied``: the policy's counters
        start over."""
        self._floor_index = max(self._floor_index, applied)
        self._loaded = True
        self._reads_since_refresh = 0
        self._last_refresh = self._clock()
        self.refresh_count += 1

    def _before_read(self) -> None:
        if isinstance(self.refresh_policy, RefreshPolicyWatch):
            self._watch_sync()
        else:
            if self._watch is not None:
                # The policy changed: the stream stops; the copy is refreshed as it says.
                self._watch.close()
                self._watch = None
            if self._due():
                self._reload()
        self._reads_since_refresh += 1

    # ----- following the change stream (RefreshPolicyWatch) ------------------------------

    def on_change(self, hook: Callable[[Change], None]) -> None:
        """Registers ``hook``, called with a :class:`Change` for each change the local copy
        takes from the cluster under ``RefreshPolicyWatch``: once per change, in revision
        order, on the thread that uses the dict, during that call (a read takes up the changes
        that have arrived and calls the hooks before it answers). Hooks see the changes made
        after the dict's load; when the dict has to load again (the servers no longer kept the
        changes since its copy), they see the differences between the old copy and the new
        one, each with the revision of the new load. :meth:`poll` takes up changes without
        reading."""
        with self._lock:
            self._hooks.append(hook)

    def poll(self) -> int:
        """Takes up the changes that have arrived (calling the hooks) without reading, under
        ``RefreshPolicyWatch``; returns how many."""
        with self._lock:
            if not isinstance(self.refresh_policy, RefreshPolicyWatch):
                return 0
            return self._watch_sync()

    @property
    def revision(self) -> int | None:
        """The revision the local copy stands for under ``RefreshPolicyWatch`` (it is the
        dictionary's state as of that revision); ``None`` under another policy."""
        with self._lock:
            return None if self._watch is None else self._watch.revision

    @property
    def watch_connected_to(self) -> str | None:
        """The server the change stream is connected to now, if any."""
        with self._lock:
            return None if self._watch is None else self._watch.connected_to

    def _tell(self, e: wire.WatchEvent) -> None:
        if not self._hooks:
            return
        key = decode_key(e.key)
        value = None if e.value is None else decode_value(e.value)
        change = Change(e.kind, key, value, e.revision)
        for hook in self._hooks:
            hook(change)

    @staticmethod
    def _apply(local: dict[Key, Any], e: wire.WatchEvent) -> None:
        if e.value is None:
            local.pop(decode_key(e.key), None)
        else:
            local[decode_key(e.key)] = decode_value(e.value)

    def _watch_load(self) -> None:
        """Loads the copy linearizably, watches from the revision after the load, and brings
        the copy to one revision; on a reload, tells the hooks what changed."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        deadline = time.monotonic() + self.client.timeout
        while True:
            try:
                local, watch, high = self._load_and_watch(deadline)
                break
            except Compacted:
                # The server the watch reached no longer keeps the changes since the load (it
                # installed a newer snapshot meanwhile, or that many changes came during a
                # long load): load again, within the client's timeout.
                if time.monotonic() >= deadline:
                    raise
        old, self._local = self._local, local
        if self._loaded:
            self._tell_differences(old, watch.revision)
        self._watch = watch
        self._mark_loaded(high)

    def _load_and_watch(self, deadline: float) -> tuple[dict[Key, Any], Watch, int]:
        """One load and a watch from after it, the copy brought to the newest page's
        revision: the copy, the watch, and that revision."""
        # Each page is read at its own revision: the watch starts after the lowest and the
        # copy is used only once it has reached the highest. Changes after a page's revision
        # applied over it in order leave each key as it was then, so they apply blindly.
        local, low, high = self._load(False)
        watch = self.client.watch(b"", low + 1, endpoint=self.watch_endpoint)
        try:
            while watch.revision < high:
                e = watch.next(max(0.0, deadline - time.monotonic()))
                if e is None:
                    raise Timeout("the change stream did not reach the load's revision in time")
                self._apply(local, e)
        except BaseException:
            watch.close()
            raise
        return local, watch, high

    def _tell_differences(self, old: dict[Key, Any], revision: int) -> None:
        if not self._hooks:
            return
        for k, v in self._local.items():
            if k not in old or old[k] != v:
                for hook in self._hooks:
                    hook(Change("put", k, v, revision))
        for k in old:
            if k not in self._local:
                for hook in self._hooks:
                    hook(Change("delete", k, None, revision))

    def _watch_sync(self) -> int:
        """Before a read: waits until the copy has reached this dict's own last write, then
        takes up every change that has arrived; returns how many it applied."""
        if self._watch is None:
            self._watch_load()
        applied = 0
        while True:
            w = self._watch
            assert w is not None
            reached = w.revision >= self._floor_index or w.wait_for(
                self._floor_index, self.client.timeout
            )
            try:
                while True:
                    e = w.try_next()
                    if e is None:
                        break
                    self._apply(self._local, e)
                    self._tell(e)
                    applied += 1
            except Compacted:
                # The servers no longer keep what the copy needs next: load again.
                self._watch_load()
                continue
            if not reached:
                raise Timeout("the change stream did not bring this dict's own write in time")
            return applied

    # ----- reads (from the local copy, refreshed per the policy) -----------------------

    @staticmethod
    def _norm(key: Key) -> Key:
        return decode_key(encode_key(key))

    def __getitem__(self, key: Key) -> Any:
        with self._lock:
            self._before_read()
            try:
                return self._local[self._norm(key)]
            except KeyError:
                raise NotFound(key) from None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (str, bytes)):
            return False
        with self._lock:
            self._before_read()
            return self._norm(key) in self._local

    def __len__(self) -> int:
        with self._lock:
            self._before_read()
            return len(self._local)

    def __iter__(self) -> Iterator[Key]:
        with self._lock:
            self._before_read()
            return iter(list(self._local))

    def copy(self) -> dict[Key, Any]:
        """A plain dict of the contents, after one refresh (per the policy). Prefer it to
        ``dict(d)``, which reads key by key and so refreshes per key under ``Always``."""
        with self._lock:
            self._before_read()
            return dict(self._local)

    def keys(self) -> KeysView[Key]:
        return self.copy().keys()

    def items(self) -> ItemsView[Key, Any]:
        return self.copy().items()

    def values(self) -> ValuesView[Any]:
        return self.copy().values()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DistributedDict):
            return self.copy() == other.copy()
        if isinstance(other, Mapping):
            return self.copy() == dict(other.items())
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __repr__(self) -> str:
        return repr(self.copy())

    @property
    def local(self) -> dict[Key, Any]:
        """The local copy as it is, without refreshing."""
        with self._lock:
            return dict(self._local)

    # ----- writes (always to the cluster) ----------------------------------------------

    def _attempts(self, op: Callable[[], _T]) -> _T:
        attempts = max(1, self.append_retry_attempts)
        for attempt in range(attempts):
            try:
                return op()
            except (Timeout, Unavailable, ConnectionFailed) as e:
                if e.may_have_applied or attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    def __setitem__(self, key: Key, value: Any) -> None:
        raw_key = encode_key(key)
        data = encode_value(value)
        with self._lock:
            revision = self._attempts(lambda: self.client.put(raw_key, data))
            self._floor_index = max(self._floor_index, revision)
            if self._watch is None:
                # Under RefreshPolicyWatch the copy takes it from the stream, in its place.
                self._local[decode_key(raw_key)] = decode_value(data)

    def __delitem__(self, key: Key) -> None:
        raw_key = encode_key(key)
        with self._lock:
            existed, revision = self._attempts(lambda: self.client.delete_with_revision(raw_key))
            self._floor_index = max(self._floor_index, revision)
            if self._watch is None:
                self._local.pop(decode_key(raw_key), None)
        if not existed:
            raise NotFound(key)

    def clear(self) -> None:
        """Deletes every key (those a fresh load finds, or, under ``RefreshPolicyWatch``,
        those the copy holds once it has taken up every change that has arrived)."""
        with self._lock:
            if isinstance(self.refresh_policy, RefreshPolicyWatch):
                self._watch_sync()
            else:
                self._reload()
            for key in list(self._local):
                with contextlib.suppress(NotFound):
                    del self[key]

    # ----- the cluster -----------------------------------------------------------------

    def diagnostic(self) -> dict[str, Any]:
        """The status of the server the dict is connected to, as a dict (role, term,
        leader, indexes, members, ...)."""
        return dataclasses.asdict(self.client.status())

    def config_cluster(self, action: str, address: str, port: int, id: int | None = None) -> None:
        """Changes the membership, as the original's ``config_cluster``: ``'add'`` the server
        at ``address:port`` (started with ``zattd --join``; its id is asked from it unless
        given; it becomes a voter once caught up, and the call returns then), or
        ``'delete'`` the member at that address."""
        addr = _endpoint(address, port)
        if action == "add":
            if id is None:
                id = self.client.status_of(addr).id
            self.client.member_add(id, addr)
        elif action in ("delete", "remove"):
            for m in self.client.members():
                if _same_endpoint(m.addr, addr):
                    self.client.member_remove(m.id)
                    return
            raise ConfigError(f"no member of the cluster is at {addr}")
        else:
            raise ConfigError(f"config_cluster action {action!r}: use 'add' or 'delete'")

    def close(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
        self.client.close()

    def __enter__(self) -> DistributedDict:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
