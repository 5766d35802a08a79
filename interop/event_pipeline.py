"""baseplate.py's own event pipeline on a baseplate-mq queue (``nox -s baseplate_py``).

The recipe of docs/baseplate_py.rst (docs/baseplate_py_events.py) is loaded
first, exactly as written, in this process and in the sidecar's. Then
baseplate.py's publisher sidecar (``publish_events``, which gets with
``timeout=0.2`` and posts gzip'd batches) runs against a collector on
127.0.0.1, and its ``EventQueue.put()`` (which puts with ``timeout=0``)
sends numbered events, retrying while the queue is full. Every event must
reach the collector once, in order.

Run as root in an IPC namespace of its own (``unshare --ipc``), where the
mqueue sysctls may be raised for baseplate.py's 100 KiB events.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import hmac
import http.server
import json
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, List

RECIPE = Path(__file__).resolve().parent.parent / "docs" / "baseplate_py_events.py"
SECRET = b"baseplate-mq"
# The sidecar's queue depth: ulimit -q still binds in the namespace, and only
# a few messages of 100 KiB fit in its 819200 bytes.
DEPTH = 5

# Runs the sidecar as its console script would, after the recipe.
SIDECAR = """
import runpy, sys
runpy.run_path(sys.argv.pop(1))
from baseplate.sidecars.event_publisher import publish_events
publish_events()
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
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    collector = Collector()
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    runpy.run_path(str(RECIPE))  # before baseplate.lib.events is imported
    from baseplate.lib.events import EventQueue, EventQueueFullError

    from baseplate import message_queue

    config = Path(tempfile.mkdtemp()) / "sidecar.ini"
    config.write_text(
        "[event-publisher:main]\n"
        f"collector.hostname = 127.0.0.1:{collector.server_address[1]}\n"
        "collector.scheme = http\n"
        "key.name = test\n"
        f"key.secret = {base64.b64encode(SECRET).decode()}\n"
        f"max_queue_size = {DEPTH}\n"
    )
    sidecar = subprocess.Popen([sys.executable, "-c", SIDECAR, str(RECIPE), str(config)])
    try:
        # The sidecar creates the queue at its depth; the service opens it.
        deadline = time.monotonic() + 60
        while True:
            try:
                message_queue.MessageQueue("/events-main", create=False).close()
                break
            except message_queue.QueueNotFoundError:
                if time.monotonic() > deadline or sidecar.poll() is not None:
                    raise SystemExit("the sidecar did not create /events-main") from None
                time.sleep(0.05)
        queue: EventQueue[Any] = EventQueue("main", lambda event: json.dumps(event).encode())
        assert isinstance(queue.queue, message_queue.MessageQueue), "the recipe is not in use"
        full = 0
        for sequence in range(args.events):
            while True:
                try:
                    queue.put({"sequence": sequence, "padding": "x" * (sequence % 200)})
                    break
                except EventQueueFullError:
                    full += 1
                    time.sleep(0.0005)
        deadline = time.monotonic() + 60
        while len(collector.events) < args.events and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2)  # anything more would be a duplicate
        with collector.lock:
            received = [event["sequence"] for event in collector.events]
        print(
            json.dumps(
                {
                    "events put": args.events,
                    "events received": len(received),
                    "batches": collector.batches,
                    "times the queue was full": full,
                    "queue mode": oct(queue.queue.mode),
                }
            )
        )
        if received != list(range(args.events)):
            missing = sorted(set(range(args.events)) - set(received))
            raise SystemExit(
                f"events lost, duplicated or reordered: {len(missing)} missing "
                f"(first {missing[:5]}), {len(received) - len(set(received))} duplicated"
            )
        if queue.queue.mode != 0o660:
            raise SystemExit(f"the recipe's mode did not hold: {queue.queue.mode:#o}")
    finally:
        sidecar.send_signal(signal.SIGTERM)
        try:
            sidecar.wait(10)
        except subprocess.TimeoutExpired:
            sidecar.kill()
            sidecar.wait()
        shutil.rmtree(config.parent)
        try:
            message_queue.unlink("/events-main")
        except message_queue.QueueNotFoundError:
            pass


if __name__ == "__main__":
    main()
