"""``kill -9`` a ``civicbot worker`` at random points of a broadcast, 20 times.

The same set-up as bench/broadcast.py (a throwaway PostgreSQL database, the fake Twilio, two
real ``civicbot worker`` processes): during the broadcast one of the two workers, chosen at
random, is killed with SIGKILL at spread-out, jittered points, and a new one (another name, as
a supervisor would start) takes its place; its claimed rows wait for their lease
(``--lease``). Prints lost and duplicated messages and how many sends were in flight at the
kills (the bound on duplicates; see docs/scale.md).

    .venv/bin/python bench/crash.py [--kills 20] [--messages 4000] [--rate 100]
"""

from __future__ import annotations

import argparse
import sys

import broadcast  # bench/broadcast.py, beside this file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=100.0, help="CIVICBOT_TWILIO_MPS")
    parser.add_argument("--lease", type=float, default=3.0, help="CIVICBOT_OUTBOX_LEASE_SECONDS")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=16)
    return broadcast.run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
