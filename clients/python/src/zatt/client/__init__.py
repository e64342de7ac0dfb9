"""Talking to a Zatt cluster from Python: the blocking :class:`Client`, its change streams
(:class:`Watch`), and the original Zatt's :class:`DistributedDict` with its refresh policies.

Owns the public names of the client API; the machinery lives in ``_client`` (retries,
sessions), ``_watch`` (change streams), ``distributedDict`` (the local copy) and
``refresh_policies``. Must not import
anything outside the standard library.
"""

from __future__ import annotations

from ..errors import (
    CasFailed,
    Compacted,
    ConfigError,
    ConnectionFailed,
    NotFound,
    NotLeader,
    ProtocolError,
    ServerError,
    SessionExpired,
    Timeout,
    TooLarge,
    Unavailable,
    ZattError,
)
from ..wire import Member, PeerStatus, Revision, Status, WatchEvent
from . import refresh_policies
from ._client import DEFAULT_ENDPOINT, Client, ClientStats, KeyValue, ReadReply
from ._watch import Watch, WatchStats
from .distributedDict import Change, DistributedDict
from .refresh_policies import (
    RefreshPolicy,
    RefreshPolicyAlways,
    RefreshPolicyCount,
    RefreshPolicyLock,
    RefreshPolicyTime,
    RefreshPolicyWatch,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "CasFailed",
    "Change",
    "Client",
    "ClientStats",
    "Compacted",
    "ConfigError",
    "ConnectionFailed",
    "DistributedDict",
    "KeyValue",
    "Member",
    "NotFound",
    "NotLeader",
    "PeerStatus",
    "ProtocolError",
    "ReadReply",
    "RefreshPolicy",
    "RefreshPolicyAlways",
    "RefreshPolicyCount",
    "RefreshPolicyLock",
    "RefreshPolicyTime",
    "RefreshPolicyWatch",
    "Revision",
    "ServerError",
    "SessionExpired",
    "Status",
    "Timeout",
    "TooLarge",
    "Unavailable",
    "Watch",
    "WatchEvent",
    "WatchStats",
    "ZattError",
    "refresh_policies",
]
