"""A fast, safe wrapper around POSIX message queues (``mq_overview(7)``).

The layers, from the bottom: ``build_ffi.py`` declares the C surface, which
``csrc/`` implements; :mod:`baseplate.message_queue._mqueue` is the raw cffi
binding it generates, which :mod:`baseplate.message_queue.binding` alone
imports (and refuses if it was built from another surface); an open
queue's state lives in :mod:`baseplate.message_queue.handle`; the modules
above it are the Python API, and :mod:`baseplate.message_queue.cli` the
command line over it. Every
``errno`` becomes an exception in one place,
:func:`baseplate.message_queue.diagnoses.error_for`; every argument is checked
before any system call (:mod:`baseplate.message_queue.checks`); every wait
happens in one place (:mod:`baseplate.message_queue.waiting`).

The names below are the public API, whatever module defines them. They are
loaded on first use (PEP 562), so that importing the command line, which
runs this file first, loads no binding: ``baseplate-mq --help`` stays quick.
The submodules are the implementation: their names may change. One is
public, and imported only by whoever uses it:
:mod:`baseplate.message_queue.baseplate_py`, which switches reddit's
baseplate.py to this queue (``install()``) and runs its sidecars.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at start-up

# Which module defines each public name (and what pickles of 1.0.0 name).
_HOMES = {
    "InvalidParametersError": "errors",
    "MessageQueueError": "errors",
    "MessageQueueOSError": "errors",
    "MessageTooLargeError": "errors",
    "QueueClosedError": "errors",
    "QueueExistsError": "errors",
    "QueueNotFoundError": "errors",
    "QueuePermissionError": "errors",
    "TimedOutError": "errors",
    "Message": "message",
    "_rebuild_message": "message",
    "MessageQueue": "queue",
    "unlink": "queue",
    "NAME_MAX": "checks",
    "PRIORITY_MAX": "checks",
    "RLIMIT_MSGQUEUE": "checks",
    "TIMEOUT_MAX": "checks",
    "MessageData": "checks",
    "validate_name": "checks",
    "mqueue_mount": "system",
}

__all__ = [
    "NAME_MAX",
    "PRIORITY_MAX",
    "TIMEOUT_MAX",
    "InvalidParametersError",
    "Message",
    "MessageData",
    "MessageQueue",
    "MessageQueueError",
    "MessageQueueOSError",
    "MessageTooLargeError",
    "QueueClosedError",
    "QueueExistsError",
    "QueueNotFoundError",
    "QueuePermissionError",
    "TimedOutError",
    "mqueue_mount",
    "unlink",
    "validate_name",
]

if TYPE_CHECKING:  # pragma: no cover
    from baseplate.message_queue.checks import NAME_MAX as NAME_MAX
    from baseplate.message_queue.checks import PRIORITY_MAX as PRIORITY_MAX
    from baseplate.message_queue.checks import RLIMIT_MSGQUEUE as RLIMIT_MSGQUEUE
    from baseplate.message_queue.checks import TIMEOUT_MAX as TIMEOUT_MAX
    from baseplate.message_queue.checks import MessageData as MessageData
    from baseplate.message_queue.checks import validate_name as validate_name
    from baseplate.message_queue.errors import (
        InvalidParametersError as InvalidParametersError,
    )
    from baseplate.message_queue.errors import MessageQueueError as MessageQueueError
    from baseplate.message_queue.errors import MessageQueueOSError as MessageQueueOSError
    from baseplate.message_queue.errors import MessageTooLargeError as MessageTooLargeError
    from baseplate.message_queue.errors import QueueClosedError as QueueClosedError
    from baseplate.message_queue.errors import QueueExistsError as QueueExistsError
    from baseplate.message_queue.errors import QueueNotFoundError as QueueNotFoundError
    from baseplate.message_queue.errors import QueuePermissionError as QueuePermissionError
    from baseplate.message_queue.errors import TimedOutError as TimedOutError
    from baseplate.message_queue.message import Message as Message
    from baseplate.message_queue.queue import MessageQueue as MessageQueue
    from baseplate.message_queue.queue import unlink as unlink
    from baseplate.message_queue.system import mqueue_mount as mqueue_mount
else:
    # The values load on first use (__getattr__, below); they are declared
    # here, where the documentation reads what they are.

    #: What :meth:`MessageQueue.put` accepts: text (sent as UTF-8) or any
    #: bytes-like object (anything with the buffer protocol).
    MessageData: object
    #: Priorities run from 0 (lowest, the default) to ``PRIORITY_MAX - 1``.
    PRIORITY_MAX: int
    #: The longest name after the leading slash, in bytes.
    NAME_MAX: int
    #: The per-user byte allowance for queues (``ulimit -q``), for
    #: :func:`resource.getrlimit`; from ``<sys/resource.h>``, since PyPy's
    #: :mod:`resource` does not name it.
    RLIMIT_MSGQUEUE: int
    #: The largest timeout accepted, in seconds (about 146 years: half the range of
    #: a deadline in nanoseconds, so that "now" plus the timeout still fits).
    TIMEOUT_MAX: float


def __getattr__(name: str) -> object:
    """Load a public name from its home module, once (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
