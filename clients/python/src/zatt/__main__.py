"""``python -m zatt``: an interactive Python prompt already connected to a cluster, with ``d``
a :class:`~zatt.client.DistributedDict` and ``client`` a :class:`~zatt.client.Client`.

Owns the command line of the prompt only; must not add behaviour the library lacks. Exit
status: 0 when the prompt ends, 1 when the
cluster cannot be reached, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import code
import sys
from collections.abc import Sequence

from . import __version__
from .client import (
    Client,
    DistributedDict,
    RefreshPolicyAlways,
    RefreshPolicyCount,
    RefreshPolicyLock,
    RefreshPolicyTime,
    ZattError,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zatt",
        description="An interactive Python prompt connected to a Zatt cluster: `d` is a "
        "DistributedDict, `client` a Client.",
    )
    parser.add_argument(
        "--endpoints",
        default="127.0.0.1:5254",
        help="HOST:PORT,... of any members (default 127.0.0.1:5254)",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per operation (default 10)"
    )
    parser.add_argument("--tls-ca", help="speak TLS, trusting the CA certificates in this PEM file")
    parser.add_argument(
        "--stale-refresh",
        action="store_true",
        help="let the dict's refreshes be served without a round through the leader",
    )
    parser.add_argument("--version", action="version", version=f"zatt {__version__}")
    args = parser.parse_args(argv)
    try:
        client = Client(args.endpoints, timeout=args.timeout, tls_ca=args.tls_ca)
        d = DistributedDict(client=client, stale_refresh=args.stale_refresh)
    except ZattError as e:
        print(f"python -m zatt: {e}", file=sys.stderr)
        return 1
    namespace = {
        "d": d,
        "client": client,
        "Client": Client,
        "DistributedDict": DistributedDict,
        "RefreshPolicyAlways": RefreshPolicyAlways,
        "RefreshPolicyCount": RefreshPolicyCount,
        "RefreshPolicyLock": RefreshPolicyLock,
        "RefreshPolicyTime": RefreshPolicyTime,
    }
    banner = (
        f"Zatt {__version__} at {args.endpoints}: `d` is a DistributedDict, "
        "`client` a Client. Ctrl-D leaves."
    )
    try:
        code.interact(banner=banner, local=namespace, exitmsg="")
    except SystemExit as e:
        # exit() inside the prompt.
        return e.code if isinstance(e.code, int) else 0
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
