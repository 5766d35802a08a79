"""Instructions per in-process round trip, counted by valgrind.

Timings on a shared machine drift by 10% from run to run; instruction counts
do not. This runs 1-byte round trips under ``valgrind --tool=callgrind``
twice (0 and N messages) and prints the difference per message: the
user-space cost of each competitor's Python and C code, system calls
excluded. The loops: ``put`` plus ``get``; ``put`` plus the next turn of
a ``for message in queue`` loop; the users' event pattern,
``put(m, timeout=0)`` plus ``get(timeout=0.2)``; ``put`` plus ``get_into``
a reused buffer; ``put_many`` plus ``get_many`` of 8, per message; the raw
cffi calls of the first attempts alone; posix_ipc's ``send`` plus
``receive``. Needs valgrind (``apt-get install valgrind``); run
``python -m benchmarks.instructions``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import uuid

ROUND_TRIPS = 20_000
LOOPS = [
    "put + get",
    "put + for",
    "event pattern",
    "put + get_into",
    "batches of 8",
    "raw cffi calls",
    "posix_ipc",
]


def _loop(which: str, n: int) -> None:
    """The measured loop, run inside valgrind."""
    from baseplate.message_queue._mqueue import lib

    from baseplate.message_queue import MessageQueue

    queue = MessageQueue(f"/bench-{uuid.uuid4().hex}", 10, 8192)
    message = b"x"
    try:
        if which == "put + get":
            put, get = queue.put, queue.get
            for _ in range(n):
                put(message)
                get()
        elif which == "put + for":  # the consumer's for loop, beside "put + get"
            put, left = queue.put, n
            if left:
                put(message)
                for _ in queue:
                    left -= 1
                    if not left:
                        break
                    put(message)
        elif which == "event pattern":
            put, get = queue.put, queue.get
            for _ in range(n):
                put(message, timeout=0)
                get(timeout=0.2)
        elif which == "put + get_into":
            put, get_into, into = queue.put, queue.get_into, bytearray(8192)
            for _ in range(n):
                put(message)
                get_into(into)
        elif which == "batches of 8":
            put_many, get_many, batch = queue.put_many, queue.get_many, [message] * 8
            for _ in range(n // 8):
                put_many(batch)
                get_many(8)
        elif which == "raw cffi calls":
            try_put, try_get, handle = lib.bp_try_put, lib.bp_try_get, queue._handle.raw
            buffer = queue._handle.new_buffer()  # keeps its memory alive
            data = buffer[0]
            for _ in range(n):
                try_put(handle, message, 1, 0)
                try_get(data)
        else:
            import posix_ipc

            other = posix_ipc.MessageQueue(
                f"/bench-{uuid.uuid4().hex}", posix_ipc.O_CREAT, max_messages=10
            )
            send, receive = other.send, other.receive
            for _ in range(n):
                send(message)
                receive()
            other.unlink()
            other.close()
    finally:
        queue.unlink()
        queue.close()


def _count(which: str, n: int) -> int:
    """Instructions valgrind counted for one run of the loop."""
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--run",
            which,
            str(n),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts every run
    )
    match = re.search(r"refs:\s+([\d,]+)", result.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{result.stderr}")
    return int(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs=2, metavar=("WHICH", "N"), help=argparse.SUPPRESS)
    parser.add_argument("which", nargs="*", default=LOOPS, help=f"some of: {', '.join(LOOPS)}")
    args = parser.parse_args()
    if args.run:
        _loop(args.run[0], int(args.run[1]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    for which in args.which:
        try:
            count = (_count(which, ROUND_TRIPS) - _count(which, 0)) // ROUND_TRIPS
        except subprocess.CalledProcessError as error:
            print(f"{which:16} failed: {error.stderr.strip().splitlines()[-1]}", flush=True)
        else:
            print(f"{which:16} {count:6,} instructions per message sent and received", flush=True)


if __name__ == "__main__":
    main()
