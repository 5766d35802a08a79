"""Producers and consumers in several processes through faults; shared by
``nox -s stress`` (run.py) and the test suite's CI-sized run.

Every payload carries (producer, sequence) and a CRC32, so the consumers can
tell lost, duplicated and corrupted messages apart.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
import time
import zlib
from typing import Dict, List, Tuple

from baseplate.message_queue import MessageQueue, TimedOutError

HEADER = struct.Struct("<IIII")  # producer, sequence, length, crc32


def payload(producer: int, sequence: int) -> bytes:
    body = bytes([(producer * 31 + sequence) % 256]) * ((sequence * 7) % 200)
    return HEADER.pack(producer, sequence, len(body), zlib.crc32(body)) + body


def check(message: bytes) -> Tuple[int, int, bool]:
    producer, sequence, length, crc = HEADER.unpack_from(message)
    body = message[HEADER.size :]
    return producer, sequence, len(body) == length and zlib.crc32(body) == crc


def _produce(name: str, producer: int, count: int) -> None:
    with MessageQueue(name) as queue:
        sequence = 0
        while sequence < count:
            batch = [payload(producer, s) for s in range(sequence, min(count, sequence + 16))]
            if sequence % 32 == 0:
                queue.put_many(batch)
            else:
                for message in batch:
                    queue.put(message)
            sequence += len(batch)


def _consume(name: str, threads: int, write_fd: int, idle: float) -> None:
    """Consume with several threads under a 1 ms SIGALRM storm; report what came."""
    signal.signal(signal.SIGALRM, lambda signum, frame: None)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    seen: List[bytes] = []
    lock = threading.Lock()
    with MessageQueue(name) as queue:

        def worker(index: int) -> None:
            local: List[bytes] = []
            while True:
                try:
                    if index % 2:
                        local.extend(queue.get_many(8, timeout=idle))
                    else:
                        local.append(queue.get(timeout=idle))
                except TimedOutError:
                    break
            with lock:
                seen.extend(local)

        workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    report = bytearray()
    for message in seen:
        producer, sequence, intact = check(message)
        report += struct.pack("<IIB", producer, sequence, intact)
    with os.fdopen(write_fd, "wb") as pipe:
        pipe.write(report)


def run_load(
    name: str, producers: int, consumers: int, threads: int, per_producer: int, idle: float = 2.0
) -> Dict[str, float]:
    """Fork everything, wait, and count lost / duplicated / corrupted messages."""
    start = time.monotonic()
    children = []
    pipes = []
    for _ in range(consumers):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                _consume(name, threads, write_fd, idle)
            finally:
                os._exit(0)
        os.close(write_fd)
        pipes.append(read_fd)
        children.append(pid)
    for producer in range(producers):
        pid = os.fork()
        if pid == 0:
            try:
                _produce(name, producer, per_producer)
            finally:
                os._exit(0)
        children.append(pid)
    received: Dict[Tuple[int, int], int] = {}
    corrupted = 0
    for read_fd in pipes:
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
        for offset in range(0, len(data), 9):
            producer, sequence, intact = struct.unpack_from("<IIB", data, offset)
            received[(producer, sequence)] = received.get((producer, sequence), 0) + 1
            corrupted += not intact
    statuses = [os.waitpid(pid, 0)[1] for pid in children]
    elapsed = time.monotonic() - start - idle
    total = producers * per_producer
    expected = {(p, s) for p in range(producers) for s in range(per_producer)}
    return {
        "sent": total,
        "received": sum(received.values()),
        "lost": len(expected - set(received)),
        "duplicated": sum(n - 1 for n in received.values() if n > 1),
        "corrupted": corrupted,
        "failed children": sum(status != 0 for status in statuses),
        "messages/s": total / max(elapsed, 1e-9),
    }
