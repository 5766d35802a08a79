"""baseplate.message_queue.baseplate_py: install() and the sidecars' runner.

Each case runs in a child interpreter of its own, since install() changes
baseplate.py's modules for the process. The cases that need baseplate.py
itself skip without it; those about its absence, a module it does not know,
and the runner's usage do not need it. Queues are created first at the
default kernel's sizes (10 messages of 8192 bytes), as docs/baseplate_py.rst
says, so that all run as an ordinary user.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from typing import Iterator

import pytest

from baseplate.message_queue import MessageQueue
from helpers import unique_name, unlink_quietly


def _has_baseplate_py() -> bool:
    try:
        metadata.version("baseplate")
    except metadata.PackageNotFoundError:
        return False
    return True


needs_baseplate_py = pytest.mark.skipif(
    not _has_baseplate_py(),
    reason="baseplate.py is not installed (nox -s baseplate_py installs it)",
)


def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(code: str, *args: str) -> str:
    result = run(code, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def events_name() -> Iterator[str]:
    """An /events-NAME queue created first, at the default kernel's sizes."""
    suffix = unique_name("bp-test")[1:]
    MessageQueue("/events-" + suffix, 10, 8192, mode=0o600).close()
    yield suffix
    unlink_quietly("/events-" + suffix)


# -- without baseplate.py ---------------------------------------------------------


def test_importing_the_module_changes_nothing_and_needs_no_baseplate_py() -> None:
    ok(
        """
        import sys
        import baseplate  # baseplate.py's __init__.py, if installed, adds finders of its own
        finders = list(sys.meta_path)
        from baseplate.message_queue import baseplate_py
        # (baseplate.py's own baseplate/__init__.py, if installed, imports some of its modules)
        assert "baseplate.lib.message_queue" not in sys.modules
        assert "baseplate.lib.events" not in sys.modules
        assert sys.meta_path == finders
        """
    )


def test_install_without_baseplate_py_says_what_to_install() -> None:
    out = ok(
        """
        import sys
        from baseplate.message_queue import baseplate_py
        sys.modules["baseplate.lib.message_queue"] = None  # as if baseplate.py were absent
        try:
            baseplate_py.install()
        except ImportError as error:
            print(error)
        """
    )
    assert "baseplate.py is not installed" in out
    assert "pip install 'baseplate==2.7.1'" in out


def test_install_refuses_a_module_it_does_not_know() -> None:
    out = ok(
        """
        import sys, types
        from baseplate.message_queue import baseplate_py
        if "baseplate.lib" not in sys.modules:
            lib = types.ModuleType("baseplate.lib"); lib.__path__ = []
            sys.modules["baseplate.lib"] = lib
        mq = types.ModuleType("baseplate.lib.message_queue")
        mq.MessageQueue = type("MessageQueue", (), {})  # no TimedOutError
        sys.modules["baseplate.lib.message_queue"] = mq
        try:
            baseplate_py.install()
        except baseplate_py.UnknownBaseplatePyError as error:
            print(error)
        assert sys.modules["baseplate.lib.message_queue"].MessageQueue.__name__ == "MessageQueue"
        """
    )
    assert "does not look like the one baseplate-mq knows" in out
    assert "tested with baseplate.py 2.7.1" in out


@pytest.mark.parametrize("args", [["no-such-command", "x.ini"], []], ids=["unknown", "none"])
def test_the_runner_exits_2_with_usage(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "baseplate.message_queue.baseplate_py", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "usage: python -m baseplate.message_queue.baseplate_py" in result.stderr
    assert "event-publisher" in result.stderr
    assert "Traceback" not in result.stderr


# -- with baseplate.py ---------------------------------------------------------------

# Checks run after install(), whichever order the imports took.
AFTER_INSTALL = """
import json
from baseplate.lib import message_queue as bpmq
from baseplate.lib.events import EventQueue, EventQueueFullError, EventTooLargeError
try:
    from baseplate.clients import redis as _redis_client  # reads message_queue.TimedOutError
except ImportError:  # redis is an extra of baseplate.py
    _redis_client = None
from baseplate.message_queue import MessageQueue, MessageQueueError

name = sys.argv[1]
queue = EventQueue(name, lambda event: json.dumps(event).encode())
assert isinstance(queue.queue, MessageQueue), type(queue.queue)
assert queue.queue.writable() and not queue.queue.readable(), "the service writes only"
assert (queue.queue.max_messages, queue.queue.max_message_size) == (10, 8192)
try:
    queue.put({"padding": "x" * 9000})
except EventTooLargeError:
    pass
else:
    raise AssertionError("no EventTooLargeError")
for sequence in range(10):
    queue.put({"sequence": sequence})
try:
    queue.put({"sequence": 10})
except EventQueueFullError:
    pass
else:
    raise AssertionError("no EventQueueFullError")
from baseplate.sidecars.event_publisher import MessageQueue as SidecarQueue
sidecar = SidecarQueue("/events-" + name, max_messages=10000, max_message_size=102400)
assert sidecar.readable() and not sidecar.writable(), "the sidecar reads only"
got = [json.loads(sidecar.get(timeout=0.2))["sequence"] for _ in range(10)]
assert got == list(range(10)), got
try:
    sidecar.get(timeout=0)
except bpmq.TimedOutError as error:  # baseplate.py's own class, unchanged
    assert type(error) is bpmq.TimedOutError
    if _redis_client is not None:
        assert _redis_client.message_queue.TimedOutError is bpmq.TimedOutError
else:
    raise AssertionError("no TimedOutError")
# On tracing's path, a message too long stays ours.
from baseplate.observers.tracing import MessageQueue as TraceQueue
spans = TraceQueue("/events-" + name, max_messages=10, max_message_size=8192)
try:
    spans.put(b"x" * 9000, timeout=0)
except EventTooLargeError:
    raise AssertionError("EventTooLargeError outside the events path")
except MessageQueueError:
    pass
print("ok")
"""


@needs_baseplate_py
@pytest.mark.parametrize("order", ["events first", "install first"])
def test_install_switches_whatever_was_imported_first(events_name: str, order: str) -> None:
    if order == "events first":
        prelude = """
        import sys
        import baseplate.lib.events
        from baseplate.message_queue import baseplate_py
        replaced = baseplate_py.install()
        assert "baseplate.lib.events" in [r.module for r in replaced], replaced
        """
    else:
        prelude = """
        import sys
        from baseplate.message_queue import baseplate_py
        replaced = baseplate_py.install()
        assert [r.module for r in replaced] == ["baseplate.lib.message_queue"], replaced
        """
    out = ok(textwrap.dedent(prelude) + AFTER_INSTALL, events_name)
    assert out.strip() == "ok"


@needs_baseplate_py
def test_install_twice_changes_nothing_and_logs_what_it_replaced() -> None:
    result = run(
        """
        import logging
        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(message)s")
        import baseplate.lib.events
        from baseplate.message_queue import baseplate_py
        first = baseplate_py.install()
        before = baseplate.lib.events.MessageQueue
        assert baseplate_py.install() == []
        assert baseplate.lib.events.MessageQueue is before
        print("\\n".join(str(r) for r in first))
        """
    )
    assert result.returncode == 0, result.stderr
    assert (
        "baseplate.lib.events.MessageQueue: baseplate.lib.message_queue.MessageQueue -> "
        "baseplate.message_queue.baseplate_py.EventQueueMessageQueue"
    ) in result.stdout
    assert "baseplate.message_queue.baseplate_py baseplate_py.install() replaced" in result.stderr


@needs_baseplate_py
def test_importing_the_module_leaves_baseplate_py_alone() -> None:
    ok(
        """
        import baseplate.lib.events as events
        from baseplate.message_queue import baseplate_py
        assert events.MessageQueue.__module__ == "baseplate.lib.message_queue"
        """
    )


@needs_baseplate_py
def test_an_event_queue_built_before_install_keeps_what_it_had() -> None:
    ok(
        """
        import baseplate.lib.events as events
        original = events.MessageQueue
        class Before:
            def __init__(self, *args, **kwargs): pass
        events.MessageQueue = Before  # stands in for posix_ipc's (10000 x 100 KiB)
        queue = events.EventQueue("x", bytes)
        events.MessageQueue = original
        from baseplate.message_queue import baseplate_py
        baseplate_py.install()
        assert type(queue.queue) is Before
        """
    )


@needs_baseplate_py
def test_a_sidecar_that_cannot_create_its_queue_is_told_the_recipe() -> None:
    name = unique_name("bp-test")[1:]
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from baseplate.message_queue import baseplate_py; baseplate_py.install()\n"
                "from baseplate.sidecars.event_publisher import MessageQueue\n"
                f"MessageQueue('/events-{name}', max_messages=10000, max_message_size=102400)",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode == 0:
            pytest.skip("this kernel's limits allow baseplate.py's own sizes")
        assert "max_messages=10000 exceeds fs.mqueue.msg_max" in result.stderr
        assert f"create the queue first (baseplate-mq create '/events-{name}' --max-m" in (
            result.stderr
        )
        assert "docs/baseplate_py.rst" in result.stderr
    finally:
        unlink_quietly(f"/events-{name}")


@needs_baseplate_py
def test_the_runner_gives_one_error_and_status_1(tmp_path: object) -> None:
    name = unique_name("bp-test")[1:]
    config = f"{tmp_path}/sidecar.ini"
    with open(config, "w") as file:
        file.write(
            f"[event-publisher:{name}]\ncollector.hostname = 127.0.0.1:9\n"
            "key.name = t\nkey.secret = dGVzdA==\nmax_queue_size = 10000\n"
        )
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "baseplate.message_queue.baseplate_py",
                "event-publisher",
                config,
                "--queue-name",
                name,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode == 0:
            pytest.skip("this kernel's limits allow baseplate.py's own sizes")
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        # (baseplate.py's own import may warn first, of pkg_resources)
        ours = result.stderr[
            result.stderr.index("python -m baseplate.message_queue.baseplate_py:") :
        ]
        lines = ours.splitlines()
        assert lines[0].startswith(
            "python -m baseplate.message_queue.baseplate_py: error: cannot create queue"
        ), result.stderr
        assert "exceeds fs.mqueue.msg_max" in lines[0]
        assert len(lines) == 2, lines  # the precise error, and one line naming the recipe
        assert "docs/baseplate_py.rst" in result.stderr
    finally:
        unlink_quietly(f"/events-{name}")
