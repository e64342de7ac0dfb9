"""When a :class:`~zatt.client.DistributedDict` reloads its local copy, under the original
Zatt's names. Owns only the decision; the dict keeps the counters and the clock and asks
:meth:`RefreshPolicy.due` before every read (``d[k]``, ``in``, ``len``, iteration, ``repr``,
comparison). Writes never refresh. :class:`RefreshPolicyWatch` is not a reload schedule but
the dict following the cluster's changes (the dict does the work; see the class).

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
    "RefreshPolicyWatch",
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


class RefreshPolicyWatch(RefreshPolicy):
    """Load once, then follow the cluster's changes (a watch on every key), applied to the
    local copy in revision order; reads are served from the copy without asking the cluster
    (they take up the changes that have arrived). Guarantees: the copy is always the
    dictionary's state at one revision; reads never go back in time, through server failures
    and leader changes too; and a dict sees its own writes (a read after a write waits until
    the copy has reached it). Other clients' writes show up as soon as their changes arrive.
    ``DistributedDict.on_change`` hooks see each change as the copy takes it. Prefer it to
    the polling policies for any dictionary read more often than it changes.
    """

    def due(self, reads_since_refresh: int, age: float) -> bool:
        return False
