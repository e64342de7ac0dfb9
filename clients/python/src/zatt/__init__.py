"""Zatt's Python client: a pure-Python (standard library only) client for a Zatt cluster.

``zatt.client`` holds the :class:`~zatt.client.Client` and the original Zatt's
:class:`~zatt.client.DistributedDict`; ``zatt.errors`` the exception hierarchy; ``zatt.wire``
the protocol's bytes (specified in ``docs/PROTOCOL.md``); ``zatt.values`` the value
conventions. ``python -m zatt`` opens an interactive prompt connected to a cluster.
"""

from __future__ import annotations

from .errors import ZattError

__version__ = "0.1.0"
__all__ = ["ZattError", "__version__"]
