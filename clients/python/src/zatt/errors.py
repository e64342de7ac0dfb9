"""Every error the Zatt client raises, in one hierarchy under :class:`ZattError`.

Owns the exception classes and their ``may_have_applied`` answer; raising them is the
client's business. Must not depend on sockets or the wire codec.

``may_have_applied`` says whether the operation may have taken effect even though it failed:
``False`` means it certainly did not (retrying anywhere is safe), ``True`` means it may have,
and only a retry the cluster can deduplicate (the client's own, with its session) is safe.
Several classes also derive from the built-in exception a Python programmer would catch
(``KeyError``, ``TimeoutError``, ``ConnectionError``, ``ValueError``).
"""

from __future__ import annotations

__all__ = [
    "CasFailed",
    "Compacted",
    "ConfigError",
    "ConnectionFailed",
    "NotFound",
    "NotLeader",
    "ProtocolError",
    "ServerError",
    "SessionExpired",
    "Timeout",
    "TooLarge",
    "Unavailable",
    "ZattError",
]


class ZattError(Exception):
    """The root of every error the client raises."""

    def __init__(self, message: str, *, may_have_applied: bool = False) -> None:
        super().__init__(message)
        self.may_have_applied = may_have_applied

    def __str__(self) -> str:
        text = str(self.args[0]) if self.args else self.__class__.__name__
        if self.may_have_applied:
            text += " (the write may have been applied)"
        return text


class NotFound(ZattError, KeyError):
    """The key is absent (raised by the mapping interface, like ``KeyError``). Not applied."""

    def __init__(self, key: str | bytes) -> None:
        super().__init__(f"key not found: {key!r}")
        self.key = key

    def __str__(self) -> str:
        return repr(self.key)


class Timeout(ZattError, TimeoutError):
    """No answer within the operation's timeout."""


class Unavailable(ZattError):
    """No server could be reached, or none could serve the request (no leader, no quorum),
    within the operation's timeout."""


class TooLarge(ZattError):
    """A key, value or frame over a limit; ``what`` names which. Not applied."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} too large: the limit is {limit} bytes")
        self.what = what
        self.limit = limit


class CasFailed(ZattError):
    """A compare-and-swap's condition did not hold. ``current`` is the key's value and
    revision, or ``None`` when it is absent. Nothing was changed."""

    def __init__(self, current: tuple[bytes, int] | None) -> None:
        if current is None:
            message = "compare-and-swap failed: the key is absent"
        else:
            message = (
                f"compare-and-swap failed: the key holds another value (revision {current[1]})"
            )
        super().__init__(message)
        self.current = current

    @property
    def current_value(self) -> bytes | None:
        return None if self.current is None else self.current[0]

    @property
    def current_revision(self) -> int:
        """The current value's revision; 0 when the key is absent."""
        return 0 if self.current is None else self.current[1]


class SessionExpired(ZattError):
    """The session expired while a write's outcome was unknown; a new session is registered.
    With ``may_have_applied`` the write may or may not have been applied, and the cluster no
    longer remembers which: read the key before writing again."""


class NotLeader(ZattError):
    """The server is not the leader (only raised where following the hint is impossible).
    Not applied."""

    def __init__(self, leader: int | None, leader_addr: str | None) -> None:
        if leader_addr is not None:
            message = f"not the leader: the leader is at {leader_addr}"
        else:
            message = "not the leader and no leader known"
        super().__init__(message)
        self.leader = leader
        self.leader_addr = leader_addr


class ServerError(ZattError):
    """The server refused the request for a reason retrying will not fix. ``kind`` is the
    error's name in the protocol (``invalid``, ``conf_change``, ``stale_request``,
    ``too_many_in_flight``, ...), ``detail`` its text if any."""

    def __init__(
        self, kind: str, message: str, *, detail: str | None = None, may_have_applied: bool = False
    ) -> None:
        super().__init__(message, may_have_applied=may_have_applied)
        self.kind = kind
        self.detail = detail


class Compacted(ZattError):
    """A watch cannot start or go on from the revision it needs: the servers keep changes
    from revision ``oldest`` on only. Load the current state and watch from after it."""

    def __init__(self, oldest: int) -> None:
        super().__init__(
            "the changes to watch are no longer kept (the servers keep revision "
            f"{oldest} on): reload and watch from after the load"
        )
        self.oldest = oldest


class ConnectionFailed(ZattError, ConnectionError):
    """The connection failed while a request that is never resent was in flight."""


class ProtocolError(ZattError):
    """The server's bytes were not a valid response, or TLS failed."""


class ConfigError(ZattError, ValueError):
    """The client was given something unusable (no endpoints, an unreadable TLS file, a
    value that cannot be encoded). Not applied."""
