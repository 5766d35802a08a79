"""A replica of the posix_ipc-era baseplate tool's loops, as the CLI baseline.

usage: python -m benchmarks.legacy_tool --read|--write QUEUE [COUNT]
Reads print each message and flush, writes send each stdin line, as the
seed's tool did; used by the harness only.
"""

from __future__ import annotations

import sys

import posix_ipc


def main() -> None:
    mode, name = sys.argv[1], sys.argv[2]
    queue = posix_ipc.MessageQueue(name, posix_ipc.O_CREAT, max_messages=10, max_message_size=8192)
    if mode == "--read":
        count = int(sys.argv[3])
        for _ in range(count):
            message, _priority = queue.receive()
            print(message.decode())
            sys.stdout.flush()
    else:
        for line in sys.stdin:
            queue.send(line.rstrip("\n"))


if __name__ == "__main__":
    main()
