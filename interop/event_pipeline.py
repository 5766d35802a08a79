"""baseplate.py's own event pipeline on a baseplate-mq queue (``nox -s baseplate_py``).

As docs/baseplate_py.rst says, on a default kernel and as any user: the
queue is created first at the default sizes (``baseplate-mq create
/events-main --max-messages 10 --max-message-size 8192``), and baseplate.py's
event publisher sidecar runs through the shipped runner (``python -m
baseplate.message_queue.baseplate_py event-publisher``) against a collector
on 127.0.0.1. Then, one after the other, services put numbered events with
baseplate.py's ``EventQueue.put()``, retrying while the queue is full:

- ``install first``: ``baseplate_py.install()``, then ``baseplate.lib.events``;
- ``events first``: ``baseplate.lib.events`` imported before ``install()``;
- ``posix_ipc``: baseplate.py's own module, on the same pre-created queue.

(A warm-up service, as ``install first``, goes before them while the sidecar
starts.) Each service also checks that an event longer than the queue's
``max_message_size`` raises ``EventTooLargeError``. Every event must reach
the collector once and in order; the producers' time in the ``put()`` calls
that sent an event is printed side by side.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import hmac
import http.server
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

SECRET = b"baseplate-mq"
# The default kernel's limits: fs.mqueue.msg_max and msgsize_max.
DEPTH, SIZE = 10, 8192
SIZES = ("--max-messages", str(DEPTH), "--max-message-size", str(SIZE))
RUNNER = "baseplate.message_queue.baseplate_py"
#: Our command line, beside this interpreter.
BASEPLATE_MQ = str(Path(sys.executable).parent / "baseplate-mq")
PHASES = ("warm-up", "install first", "events first", "posix_ipc")

# One service: argv = phase, queue name, number of events. Prints its timing as JSON.
SERVICE = """
import json, statistics, sys, time
phase, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
if phase in ("warm-up", "install first"):
    from baseplate.message_queue import baseplate_py
    baseplate_py.install()
    from baseplate.lib.events import EventQueue, EventQueueFullError, EventTooLargeError
elif phase == "events first":
    from baseplate.lib.events import EventQueue, EventQueueFullError, EventTooLargeError
    from baseplate.message_queue import baseplate_py
    baseplate_py.install()
else:
    from baseplate.lib.events import EventQueue, EventQueueFullError, EventTooLargeError

queue = EventQueue(name, lambda event: json.dumps(event).encode())
kind = type(queue.queue).__module__ + "." + type(queue.queue).__qualname__
if phase != "posix_ipc":
    assert kind.startswith("baseplate.message_queue."), kind
    try:
        queue.put({"phase": phase, "padding": "x" * 9000})
        raise SystemExit("an event of 9,000 bytes did not raise EventTooLargeError")
    except EventTooLargeError:
        pass
full = 0
calls = []
for sequence in range(count):
    event = {"phase": phase, "sequence": sequence, "padding": "x" * (sequence % 200)}
    while True:
        start = time.perf_counter()
        try:
            queue.put(event)
            calls.append(time.perf_counter() - start)
            break
        except EventQueueFullError:
            full += 1
            time.sleep(0.0005)
print(json.dumps({
    "queue class": kind,
    "times full": full,
    "seconds in put": sum(calls),
    "median put, microseconds": round(statistics.median(calls) * 1e6, 2),
}))
"""


class Collector(http.server.ThreadingHTTPServer):
    """The event collector: checks each batch's signature, keeps its events in order."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CollectorHandler)
        self.events: List[Any] = []
        self.batches = 0
        self.lock = threading.Lock()


class CollectorHandler(http.server.BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = gzip.decompress(self.rfile.read(int(self.headers["Content-Length"])))
        mac = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        if self.headers["X-Signature"] != f"key=test, mac={mac}":
            self.send_response(403)
        else:
            batch = json.loads(body)  # {"1": {"lst": ["rec", count, event...]}}
            with self.server.lock:
                self.server.events.extend(batch["1"]["lst"][2:])
                self.server.batches += 1
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500, help="per phase")
    parser.add_argument("--queue-name", default="main", help="the queue is /events-NAME")
    args = parser.parse_args()
    queue = "/events-" + args.queue_name
    queue_name = ("--queue-name", args.queue_name)
    collector = Collector()
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    # The recipe's first step: the queue, at sizes a default kernel allows.
    subprocess.run(
        [BASEPLATE_MQ, "create", queue, "--exclusive", *SIZES, "--mode", "660"],
        check=True,
    )
    config = Path(tempfile.mkdtemp()) / "sidecar.ini"
    config.write_text(
        f"[event-publisher:{args.queue_name}]\n"
        f"collector.hostname = 127.0.0.1:{collector.server_address[1]}\n"
        "collector.scheme = http\n"
        "key.name = test\n"
        f"key.secret = {base64.b64encode(SECRET).decode()}\n"
    )
    sidecar = subprocess.Popen(
        [sys.executable, "-m", RUNNER, "event-publisher", str(config), *queue_name]
    )
    timings: Dict[str, Any] = {}
    try:
        for phase in PHASES:
            service = subprocess.run(
                [sys.executable, "-c", SERVICE, phase, args.queue_name, str(args.events)],
                capture_output=True,
                text=True,
                check=False,
            )
            if service.returncode != 0:
                raise SystemExit(f"the service ({phase}) failed:\n{service.stderr}")
            timings[phase] = json.loads(service.stdout)
            if sidecar.poll() is not None:
                raise SystemExit(f"the sidecar exited with status {sidecar.returncode}")
        expected = args.events * len(PHASES)
        deadline = time.monotonic() + 60
        while len(collector.events) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2)  # anything more would be a duplicate
        with collector.lock:
            received = [(event["phase"], event["sequence"]) for event in collector.events]
        per_event = {
            phase: (
                round(timing["seconds in put"] / args.events * 1e6, 2),
                timing["median put, microseconds"],
            )
            for phase, timing in timings.items()
            if phase != "warm-up"
        }
        print(
            json.dumps(
                {
                    "events put": expected,
                    "events received": len(received),
                    "batches": collector.batches,
                    "services": timings,
                    "producer: microseconds per put(), mean and median (ours vs posix_ipc)": (
                        per_event
                    ),
                },
                indent=1,
            )
        )
        wanted = [(phase, sequence) for phase in PHASES for sequence in range(args.events)]
        if received != wanted:
            missing = sorted(set(wanted) - set(received))
            raise SystemExit(
                f"events lost, duplicated or reordered: {len(missing)} missing "
                f"(first {missing[:5]}), {len(received) - len(set(received))} duplicated"
            )
        ours = max(per_event["install first"][1], per_event["events first"][1])
        if ours > per_event["posix_ipc"][1] * 1.5:
            print(f"warning: our producer is slower than posix_ipc's: {per_event}", flush=True)
    finally:
        sidecar.send_signal(signal.SIGTERM)
        try:
            sidecar.wait(10)
        except subprocess.TimeoutExpired:
            sidecar.kill()
            sidecar.wait()
        shutil.rmtree(config.parent)
        subprocess.run([BASEPLATE_MQ, "unlink", queue])


if __name__ == "__main__":
    main()
