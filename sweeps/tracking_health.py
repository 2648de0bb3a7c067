"""``python -m sweeps.tracking_health``: check the tracking store, or replay a write spool
that a sweep driver left behind (the probe and the spool live in ``hrm_core.tracking``).

CLI::

    python -m sweeps.tracking_health probe [URI]            # exit 2 with one line when unreachable
    python -m sweeps.tracking_health replay SPOOL.jsonl [--uri URI] [--wait S]
"""

from __future__ import annotations

import argparse
import sys

from hrm_core.errors import UserError
from hrm_core.tracking.client import get_client
from hrm_core.tracking.probe import probe
from hrm_core.tracking.spool import SpoolingClient
from hrm_core.tracking.uris import redact, tracking_uri

PROG = "python -m sweeps.tracking_health"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("probe", help="check the store (default: MLFLOW_TRACKING_URI or the embedded one)")
    p.add_argument("uri", nargs="?")
    p.add_argument("--timeout", type=float, default=10.0)
    r = sub.add_parser("replay", help="replay a spool left by a driver that could not reach the server")
    r.add_argument("spool")
    r.add_argument("--uri", help="tracking URI (default: MLFLOW_TRACKING_URI)")
    r.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the server")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "probe":
            uri = args.uri or tracking_uri()
            probe(uri, args.timeout)
            print(f"ok: {redact(uri)}")
            return 0
        uri = args.uri or tracking_uri()
        probe(uri)
        client = SpoolingClient(get_client(uri), args.spool)
        done = client.flush(args.wait)
        print(f"replayed {client.replayed} call(s); {client.pending} left")
        return 0 if done else 1
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
