"""``nox -s stress`` (``python stress/run.py``): millions of messages through
faults; prints the counts, and fails on any message lost, duplicated or
corrupted."""

from __future__ import annotations

import argparse
import json
import uuid

from baseplate.message_queue import MessageQueue
from loadcheck import run_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2_000_000)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--consumers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=3)
    args = parser.parse_args()
    name = f"/bp-stress-{uuid.uuid4().hex}"
    queue = MessageQueue(name, max_messages=10, max_message_size=256)
    try:
        result = run_load(
            name, args.producers, args.consumers, args.threads, args.messages // args.producers
        )
    finally:
        queue.unlink()
        queue.close()
    print(json.dumps(result, indent=2))
    bad = result["lost"] + result["duplicated"] + result["corrupted"] + result["failed children"]
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
