"""baseplate.py 2.x on baseplate-mq: :func:`install`, and the sidecars' runner.

reddit's baseplate.py 2.x puts events and spans on POSIX queues through
``baseplate.lib.message_queue`` (posix_ipc). After :func:`install`, every
module of it that uses that queue uses ours instead::

    from baseplate.message_queue import baseplate_py

    baseplate_py.install()  # before or after baseplate.py's own imports

and its sidecars run on ours with::

    python -m baseplate.message_queue.baseplate_py event-publisher CONFIG [--queue-name main]
    python -m baseplate.message_queue.baseplate_py trace-publisher CONFIG [--queue-name main]

What :func:`install` changes, and only it (importing this module changes
nothing): the name ``MessageQueue`` in ``baseplate.lib.message_queue``,
``baseplate.lib.events``, ``baseplate.sidecars.event_publisher``,
``baseplate.observers.tracing`` and ``baseplate.sidecars.trace_publisher``,
in those already imported at once, in the others when they are imported.
Each then names an adapter over :class:`~baseplate.message_queue.MessageQueue`
with baseplate.py's constructor, which raises baseplate.py's own
``TimedOutError`` (its class is left as it is: whatever caught it still
does, ``baseplate.clients.redis`` included). The services' queues
(``EventQueue``, tracing's ``SidecarRecorder``) are opened for writing only,
the sidecars' for reading only, so that a queue this user may not use fails
at start-up. On the events path, a message longer than the queue's
``max_message_size`` raises baseplate.py's ``EventTooLargeError``; every
other error stays ours. An ``EventQueue`` built before :func:`install`
keeps the queue it has.

Tested with baseplate.py :data:`TESTED_WITH`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
from types import ModuleType
from typing import Any, Dict, List, NamedTuple, NoReturn, Optional, Sequence, Tuple

from baseplate.message_queue.errors import (
    InvalidParametersError,
    MessageQueueError,
    MessageQueueOSError,
    MessageTooLargeError,
    QueueExistsError,
    TimedOutError,
    Wording,
    invalid,
    os_error,
)
from baseplate.message_queue.queue import MessageQueue

__all__ = ["MODE", "TESTED_WITH", "Replacement", "UnknownBaseplatePyError", "install", "main"]

logger = logging.getLogger(__name__)

#: The versions of baseplate.py this module was tested with.
TESTED_WITH = ("2.7.1",)

#: The mode of a queue the adapter creates (set exactly, whatever the umask).
#: baseplate.py's own module created queues 0o644 (any local user could read
#: the events); a service and a sidecar that run as different users share a
#: group instead.
MODE = 0o660

#: The one line added to the error when a queue cannot be created at
#: baseplate.py's sizes (a template of :class:`~baseplate.message_queue.errors.Wording`).
RECIPE_LINE = (
    "baseplate.py asks for queues the default limits refuse: create the queue first "
    "(baseplate-mq create {queue} --max-messages 10 --max-message-size 8192), "
    "as the page 'Beside baseplate.py' of baseplate-mq's docs (docs/baseplate_py.rst) says"
)

# The module every other takes its queue from.
_BASE = "baseplate.lib.message_queue"
# module -> (how it opens its queue: read, write; the adapter class's name)
_USERS: Dict[str, Tuple[Optional[bool], Optional[bool], str]] = {
    "baseplate.lib.events": (False, True, "EventQueueMessageQueue"),
    "baseplate.sidecars.event_publisher": (True, False, "PublisherMessageQueue"),
    "baseplate.observers.tracing": (False, True, "ServiceMessageQueue"),
    "baseplate.sidecars.trace_publisher": (True, False, "PublisherMessageQueue"),
}


class UnknownBaseplatePyError(RuntimeError):
    """A module of baseplate.py does not look like the one :func:`install` knows."""


class Replacement(NamedTuple):
    """One name :func:`install` changed: ``module.name``, from ``old`` to ``new``."""

    module: str
    name: str
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}: {self.old} -> {self.new}"


class BaseplatePyMessageQueue(MessageQueue):
    """baseplate.py's ``MessageQueue(name, max_messages, max_message_size)`` on ours.

    Opened as :attr:`read` and :attr:`write` say; created with :data:`MODE`,
    set exactly. ``get()`` returns the message's bytes; a queue that stays
    empty (or full) raises baseplate.py's own ``TimedOutError``.
    """

    #: How the queue is opened (``read=``, ``write=`` of ours).
    read: Optional[bool] = None
    write: Optional[bool] = None
    #: baseplate.py's TimedOutError, set by install().
    timed_out: Any = TimedOutError

    def __init__(self, name: str, max_messages: int, max_message_size: int) -> None:
        read, write = self.read, self.write
        try:
            super().__init__(
                name,
                max_messages,
                max_message_size,
                mode=MODE,
                exclusive=True,
                read=read,
                write=write,
            )
        except QueueExistsError:
            # The sizes are the queue's own.
            super().__init__(name, create=False, read=read, write=write)
        except (InvalidParametersError, MessageQueueOSError) as error:
            if _is_about_creating(error):
                raise _with_recipe(error) from None
            raise
        else:
            os.fchmod(self.fileno(), MODE)  # created by this call: exactly MODE

    @property
    def queue(self) -> BaseplatePyMessageQueue:
        """As posix_ipc's object was: baseplate.py logs ``self.queue.queue.name``."""
        return self

    def put(self, message: Any, timeout: Optional[float] = None, priority: int = 0) -> None:
        try:
            MessageQueue.put(self, message, timeout, priority)
        except TimedOutError:
            raise self.timed_out() from None

    def get(self, timeout: Optional[float] = None) -> Any:
        try:
            return MessageQueue.get(self, timeout)
        except TimedOutError:
            raise self.timed_out() from None


def _is_about_creating(error: MessageQueueError) -> bool:
    words = getattr(error, "words", None)
    return words is not None and "cannot create queue" in words.template


def _with_recipe(error: MessageQueueError) -> MessageQueueError:
    """The same error, with one more line naming the recipe."""
    words: Optional[Wording] = error.words
    if words is None:
        return error
    template = words.template + "\n" + RECIPE_LINE
    if isinstance(error, MessageQueueOSError):
        return os_error(type(error), error.errno or 0, template, **words.fields)
    return invalid(template, **words.fields)


_lock = threading.RLock()
_adapters: Dict[str, type] = {}
_finder: Optional[_PatchOnImport] = None


def install() -> List[Replacement]:
    """Make baseplate.py use baseplate-mq's queue (see the module's docstring).

    Returns what it replaced now (and logs each at debug level); a module
    imported later is switched when it is imported, and logged then. A
    second call changes nothing and returns an empty list.

    :raises ImportError: baseplate.py is not installed (the words say what to install).
    :raises UnknownBaseplatePyError: a module does not look like baseplate.py's
        :data:`TESTED_WITH`.
    """
    global _finder
    with _lock:
        base = _import_base()
        if not _adapters:
            _make_adapters(base)
        replaced = _patch(base, "MessageQueue", _adapters[_BASE])
        for name in _USERS:
            module = sys.modules.get(name)
            if module is not None:
                replaced += _patch_user(module)
        if _finder is None:
            _finder = _PatchOnImport()
            sys.meta_path.insert(0, _finder)
        return replaced


def _version() -> str:
    try:
        from importlib import metadata

        return metadata.version("baseplate")
    except Exception:
        return "unknown"


def _unknown(what: str) -> UnknownBaseplatePyError:
    tested = ", ".join(TESTED_WITH)
    return UnknownBaseplatePyError(
        f"baseplate.py {_version()} does not look like the one baseplate-mq knows: {what}. "
        f"baseplate_py.install() was tested with baseplate.py {tested}; nothing was changed"
    )


def _import_base() -> ModuleType:
    try:
        return importlib.import_module(_BASE)
    except ImportError as error:
        missing = getattr(error, "name", None) or ""
        if missing.startswith("baseplate") and missing != "baseplate.message_queue":
            raise ImportError(
                f"baseplate.py is not installed ({_BASE} cannot be imported): "
                f"pip install 'baseplate=={TESTED_WITH[-1]}' (baseplate-mq was tested with "
                f"{', '.join(TESTED_WITH)}), or do not call baseplate_py.install()",
                name=error.name,
            ) from error
        if missing == "pkg_resources":
            raise ImportError(
                "baseplate.py imports pkg_resources, which setuptools 81 no longer has: "
                "pip install 'setuptools<81'",
                name=error.name,
            ) from error
        raise ImportError(
            f"baseplate.py cannot be imported ({error}): install what it needs "
            f"(pip install 'baseplate=={TESTED_WITH[-1]}' brings posix_ipc, gevent...)",
            name=error.name,
        ) from error


def _make_adapters(base: ModuleType) -> None:
    """The adapter classes, over baseplate.py's TimedOutError."""
    original = getattr(base, "MessageQueue", None)
    timed_out = getattr(base, "TimedOutError", None)
    if not isinstance(original, type) or not (
        isinstance(timed_out, type) and issubclass(timed_out, Exception)
    ):
        raise _unknown(f"{_BASE} has no MessageQueue and TimedOutError classes")
    try:
        timed_out()
    except TypeError:
        raise _unknown(f"{_BASE}.TimedOutError() cannot be raised without arguments") from None
    names = {
        _BASE: ("BaseplatePyMessageQueue", None, None),
        "EventQueueMessageQueue": ("EventQueueMessageQueue", False, True),
        "PublisherMessageQueue": ("PublisherMessageQueue", True, False),
        "ServiceMessageQueue": ("ServiceMessageQueue", False, True),
    }
    for key, (name, read, write) in names.items():
        body: Dict[str, Any] = {
            "read": read,
            "write": write,
            "timed_out": timed_out,
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": BaseplatePyMessageQueue.__doc__,
        }
        _adapters[key] = type(name, (BaseplatePyMessageQueue,), body)


def _events_adapter(events: ModuleType) -> type:
    """EventQueue's adapter: too long raises the events module's EventTooLargeError."""
    too_large = getattr(events, "EventTooLargeError", None)
    if not isinstance(too_large, type) or not hasattr(events, "EventQueue"):
        raise _unknown("baseplate.lib.events has no EventQueue and EventTooLargeError")
    base: Any = _adapters["EventQueueMessageQueue"]

    def put(self: Any, message: Any, timeout: Optional[float] = None, priority: int = 0) -> None:
        try:
            base.put(self, message, timeout, priority)
        except MessageTooLargeError as error:
            raise too_large(error.size) from None

    return type(
        "EventQueueMessageQueue",
        (base,),
        {"put": put, "__module__": __name__, "__qualname__": "EventQueueMessageQueue"},
    )


def _patch(module: ModuleType, name: str, new: Any) -> List[Replacement]:
    old = getattr(module, name, None)
    if old is new or (isinstance(old, type) and issubclass(old, new)):
        return []
    known = {_adapters[key] for key in _adapters} | {_original_class()}
    if old not in known:
        raise _unknown(f"{module.__name__}.{name} is {old!r}, not baseplate.py's MessageQueue")
    setattr(module, name, new)
    done = Replacement(module.__name__, name, _qualified(old), _qualified(new))
    logger.debug("baseplate_py.install() replaced %s", done)
    return [done]


_original: List[Any] = []


def _original_class() -> Any:
    if not _original:
        base = sys.modules[_BASE]
        _original.append(base.MessageQueue)
    return _original[0]


def _patch_user(module: ModuleType) -> List[Replacement]:
    _read, _write, key = _USERS[module.__name__]
    adapter = _adapters[key]
    if module.__name__ == "baseplate.lib.events":
        if "events" not in _adapters:
            _adapters["events"] = _events_adapter(module)
        adapter = _adapters["events"]
    return _patch(module, "MessageQueue", adapter)


def _qualified(thing: Any) -> str:
    return f"{getattr(thing, '__module__', '?')}.{getattr(thing, '__qualname__', thing)}"


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Switches a module of :data:`_USERS` imported after install(), once it is executed."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _USERS:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            spec = None if find is None else find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader)
        return spec


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        with _lock:
            _patch_user(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


# --------------------------------------------------------------------------
# The runner

_SIDECARS = {
    "event-publisher": ("baseplate.sidecars.event_publisher", "publish_events"),
    "trace-publisher": ("baseplate.sidecars.trace_publisher", "publish_traces"),
}
_PROGRAM = "python -m baseplate.message_queue.baseplate_py"
USAGE = (
    f"usage: {_PROGRAM} {{{','.join(_SIDECARS)}}} CONFIG [the sidecar's own arguments]\n"
    "Runs baseplate.py's sidecar on baseplate-mq's queue (after baseplate_py.install())."
)


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    """``python -m baseplate.message_queue.baseplate_py COMMAND CONFIG [ARGS]``."""
    from baseplate.message_queue.cli import words
    from baseplate.message_queue.cli.exits import EXIT_USAGE, finish

    args = list(sys.argv[1:] if argv is None else argv)
    words.speak_as(_PROGRAM)
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(USAGE + "\n")
        sys.exit(0)
    if not args:
        sys.stderr.write(USAGE + "\n")
        words.say_error("a command is needed: " + " or ".join(_SIDECARS))
        sys.exit(EXIT_USAGE)
    command, rest = args[0], args[1:]
    if command not in _SIDECARS:
        sys.stderr.write(USAGE + "\n")
        words.say_error(f"unknown command {command!r}: {' or '.join(_SIDECARS)}")
        sys.exit(EXIT_USAGE)
    module_name, function = _SIDECARS[command]
    try:
        install()
        module = importlib.import_module(module_name)
        sys.argv = [f"{_PROGRAM} {command}", *rest]
        getattr(module, function)()
    except (MessageQueueError, ImportError, UnknownBaseplatePyError) as error:
        if isinstance(error, MessageQueueError):
            finish(error)
        words.say_error(str(error))
        sys.exit(1)
    except BaseException as error:
        finish(error)
    sys.exit(0)


if __name__ == "__main__":
    # Run as the module itself, not as a second copy named __main__ whose
    # install() would not know the first's adapters.
    from baseplate.message_queue.baseplate_py import main as _main

    _main()
