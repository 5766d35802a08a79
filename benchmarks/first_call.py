"""The first timed call of a process, as baseplate.py's own test makes it:
``get(timeout=0.1)`` on an empty queue, in fresh processes, by the wall clock.

Prints the distribution of how late the call returned, for the first and the
second timed call of each process, and how many were more than 5 ms late
(baseplate.py's ``assertAlmostEqual(..., 0.1, places=2)``). Run ``python -m
benchmarks.first_call [RUNS]``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import uuid
from typing import List

CALLS = r"""
import sys, time
from baseplate.message_queue import MessageQueue, TimedOutError
mq = MessageQueue(sys.argv[1], max_messages=1, max_message_size=1000)
late = []
for _ in range(2):
    start = time.time()
    try:
        mq.get(timeout=0.1)
    except TimedOutError:
        pass
    late.append(time.time() - start - 0.1)
mq.close()
mq.unlink()
print(*late)
"""


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    first: List[float] = []
    second: List[float] = []
    for _ in range(runs):
        name = f"/bench-first-{uuid.uuid4().hex}"
        out = subprocess.run(
            [sys.executable, "-c", CALLS, name], capture_output=True, text=True, check=True
        ).stdout.split()
        first.append(float(out[0]))
        second.append(float(out[1]))
    for label, late in (("first timed call", first), ("second timed call", second)):
        print(
            f"{label}: late by {statistics.median(late) * 1000:.2f} ms median, "
            f"{max(late) * 1000:.2f} ms at most; {sum(x >= 0.005 for x in late)} of {runs} "
            "5 ms late or more"
        )


if __name__ == "__main__":
    main()
