"""Talking to a Zatt cluster from Python: the blocking :class:`Client` and the original
Zatt's :class:`DistributedDict` with its refresh policies.

Owns the public names of the client API; the machinery lives in ``_client`` (retries,
sessions), ``distributedDict`` (the local copy) and ``refresh_policies``. Must not import
anything outside the standard library.
"""

from __future__ import annotations

from ..errors import (
    CasFailed,
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
from ..wire import Member, PeerStatus, Revision, Status
from . import refresh_policies
from ._client import DEFAULT_ENDPOINT, Client, ClientStats, KeyValue, ReadReply
from .distributedDict import DistributedDict
from .refresh_policies import (
    RefreshPolicy,
    RefreshPolicyAlways,
    RefreshPolicyCount,
    RefreshPolicyLock,
    RefreshPolicyTime,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "CasFailed",
    "Client",
    "ClientStats",
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
    "Revision",
    "ServerError",
    "SessionExpired",
    "Status",
    "Timeout",
    "TooLarge",
    "Unavailable",
    "ZattError",
    "refresh_policies",
]
