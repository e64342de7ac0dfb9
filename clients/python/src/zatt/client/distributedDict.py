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
often and written rarely. Refreshes are linearizable by default, so with the default
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
from typing import Any, Callable, TypeVar, Union

from .._conn import split_endpoint
from ..errors import (
    ConfigError,
    ConnectionFailed,
    NotFound,
    Timeout,
    Unavailable,
)
from ..values import decode_key, decode_value, encode_key, encode_value
from ._client import Client, PathArg
from .refresh_policies import RefreshPolicy, RefreshPolicyAlways

__all__ = ["DistributedDict"]

Key = Union[str, bytes]
_T = TypeVar("_T")


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
        # Load now, as the original did, so that a wrong address shows at once.
        self.refresh(force=True)

    # ----- refreshing ------------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        """Reloads the local copy: now when ``force``, else when the policy says so."""
        with self._lock:
            if force or self._due():
                self._reload()

    def _due(self) -> bool:
        if not self._loaded:
            return True
        age = self._clock() - self._last_refresh
        return self.refresh_policy.due(self._reads_since_refresh, age)

    def _reload(self) -> None:
        local, applied = self._load(self.stale_refresh)
        if self.stale_refresh and applied < self._floor_index:
            # The answering server lags behind what this dict has already seen.
            local, applied = self._load(False)
        self._local = local
        self._floor_index = max(self._floor_index, applied)
        self._loaded = True
        self._reads_since_refresh = 0
        self._last_refresh = self._clock()
        self.refresh_count += 1

    def _load(self, stale: bool) -> tuple[dict[Key, Any], int]:
        local: dict[Key, Any] = {}
        applied: int | None = None
        for page in self.client._pages(b"", None, None, stale, None):
            for kv in page.items_kv:
                local[decode_key(kv.key)] = decode_value(kv.value)
            # A multi-page load is only as fresh as its oldest page.
            applied = page.applied_index if applied is None else min(applied, page.applied_index)
        return local, applied or 0

    def _before_read(self) -> None:
        if self._due():
            self._reload()
        self._reads_since_refresh += 1

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
            self._local[decode_key(raw_key)] = decode_value(data)

    def __delitem__(self, key: Key) -> None:
        raw_key = encode_key(key)
        with self._lock:
            existed, revision = self._attempts(lambda: self.client.delete_with_revision(raw_key))
            self._floor_index = max(self._floor_index, revision)
            self._local.pop(decode_key(raw_key), None)
        if not existed:
            raise NotFound(key)

    def clear(self) -> None:
        """Deletes every key (those a fresh load finds)."""
        with self._lock:
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
        self.client.close()

    def __enter__(self) -> DistributedDict:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
