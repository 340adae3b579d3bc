"""The fake of Apple's enrollment service (tests/apple_fake.py) in a process of its own, for the
benchmark: its CPU then is not counted as the checking process's.

    .venv/bin/python -m tests.apple_fake_server --tokens 1000 --seed 7

enrolls tokens 0..N-1 of tests/bench/common.seeded_credentials(i, seed), each downloaded (as
Apple says) by user_of(i) for "Server i" of "Org i//10", as the benchmark's loader stores them;
prints its URL on one line; and serves until its standard input closes (so it never outlives
the process that started it) or it is terminated.
"""

from __future__ import annotations

import argparse
import sys

from tests.apple_fake import FakeApple, start_fake_apple
from tests.bench.common import seeded_credentials, user_of


def enroll_seeded(fake: FakeApple, tokens: int, seed: int) -> None:
    for i in range(tokens):
        fake.enroll(
            seeded_credentials(i, seed),
            admin_id=user_of(i),
            server_name=f"Server {i}",
            org_name=f"Org {i // 10}",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    options = parser.parse_args()
    fake = start_fake_apple()
    enroll_seeded(fake, options.tokens, options.seed)
    print(fake.url, flush=True)
    try:
        sys.stdin.read()  # until the parent closes it, or dies
    finally:
        fake.close()


if __name__ == "__main__":
    main()
