"""When a :class:`~zatt.client.DistributedDict` reloads its local copy, under the original
Zatt's names. Owns only the decision; the dict keeps the counters and the clock and asks
:meth:`RefreshPolicy.due` before every read (``d[k]``, ``in``, ``len``, iteration, ``repr``,
comparison). Writes never refresh.

Every refresh is linearizable unless the dict was made with ``stale_refresh=True``: see
:class:`~zatt.client.DistributedDict` for what that gives up.
"""

from __future__ import annotations

from datetime import timedelta

__all__ = [
    "RefreshPolicy",
    "RefreshPolicyAlways",
    "RefreshPolicyCount",
    "RefreshPolicyLock",
    "RefreshPolicyTime",
]


class RefreshPolicy:
    """The base of every policy. ``reads_since_refresh`` counts the reads the current copy
    has served; ``age`` is the copy's age in seconds."""

    def due(self, reads_since_refresh: int, age: float) -> bool:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RefreshPolicyAlways(RefreshPolicy):
    """Refresh before every read (the default): every read sees the cluster's latest state,
    every write acknowledged before it by any client."""

    def due(self, reads_since_refresh: int, age: float) -> bool:
        return True


class RefreshPolicyLock(RefreshPolicy):
    """Refresh before every read while ``lock`` is true. While it is false the copy stays
    frozen, so a batch of reads sees one state; the application flips ``policy.lock``."""

    def __init__(self, status: bool = True) -> None:
        self.lock = status

    def due(self, reads_since_refresh: int, age: float) -> bool:
        return bool(self.lock)

    def __repr__(self) -> str:
        return f"RefreshPolicyLock(status={self.lock!r})"


class RefreshPolicyCount(RefreshPolicy):
    """The copy serves at most ``maximum`` reads per refresh (``maximum`` 1 is Always; 0 is
    taken as 1)."""

    def __init__(self, maximum: int = 10) -> None:
        self.maximum = maximum

    def due(self, reads_since_refresh: int, age: float) -> bool:
        return reads_since_refresh >= max(1, self.maximum)

    def __repr__(self) -> str:
        return f"RefreshPolicyCount(maximum={self.maximum!r})"


class RefreshPolicyTime(RefreshPolicy):
    """Refresh when the copy is at least ``delta`` old (a ``timedelta``, or seconds)."""

    def __init__(self, delta: timedelta | float = timedelta(minutes=1)) -> None:
        self.delta = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)

    def due(self, reads_since_refresh: int, age: float) -> bool:
        return age >= self.delta.total_seconds()

    def __repr__(self) -> str:
        return f"RefreshPolicyTime(delta={self.delta!r})"
