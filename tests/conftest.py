"""Fixtures: real kernel queues with unique names, always unlinked; and no
test leaves a process or a queue behind, whatever its outcome.

Helpers that tests import live in helpers.py; no test module imports another.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Any, Callable, Iterator

import pytest

from baseplate.message_queue import MessageQueue
from baseplate.message_queue.cli.signals import die, ending_signals, ignored_at_start
from helpers import handed_out, unique_name, unlink_quietly

_PR_SET_CHILD_SUBREAPER = 36


# What stops a run from outside, besides Ctrl-C: kill, a CI timeout, a closed
# terminal. Each becomes a KeyboardInterrupt, so that pytest still tears the
# fixtures down (children killed and reaped, queues unlinked).
_STOPPING = (signal.SIGTERM, signal.SIGHUP)
_RUN = os.getpid()  # the pytest process, which a forked child is not


def _interrupt(signum: int, frame: Any) -> None:
    if os.getpid() == _RUN:
        raise KeyboardInterrupt(signal.Signals(signum).name)
    die(signum)  # a forked child whose fork hook could not reset it


def _default_stopping_signals() -> None:
    """A child forked from the run ends as its parent expects, by the signal."""
    for signum in _STOPPING:
        try:
            if signal.getsignal(signum) is _interrupt:
                signal.signal(signum, signal.SIG_DFL)
        except ValueError:  # PyPy, forked from another thread: _interrupt sees to it
            pass


def _still_ignored(signum: int, frame: Any) -> None:
    """A signal the run was started ignoring: still ignored here, but caught,
    so that the commands the tests start get it by default (exec resets a
    caught signal, and keeps an ignored one)."""


def pytest_configure(config: pytest.Config) -> None:
    """Adopt the orphans of our children (prctl PR_SET_CHILD_SUBREAPER), so that
    a grandchild whose parent died is still ours to kill and reap; end on
    SIGTERM or SIGHUP as on Ctrl-C, after the clean-up; and start the commands
    the tests signal with each signal's default action, however the run was
    started (a script's background job ignores SIGINT and SIGQUIT, nohup
    SIGHUP). The tests of "ignored at start stays ignored" ignore it themselves."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    ignored = ignored_at_start()  # the kernel's word: PyPy reports SIG_DFL for these
    for signum in ending_signals():
        if signum in ignored:
            signal.signal(signum, _still_ignored)
        elif signum in _STOPPING and signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _interrupt)
    os.register_at_fork(after_in_child=_default_stopping_signals)


def pytest_unconfigure(config: pytest.Config) -> None:
    """However the run ended, unlink every queue name a test was given."""
    for name in handed_out:
        try:
            unlink_quietly(name)
        except Exception:
            pass


def _children() -> list[int]:
    """The processes whose parent is this one (zombies included)."""
    mine, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == mine:
                found.append(int(entry))
    return found


@pytest.fixture(autouse=True)
def no_child_survives() -> Iterator[None]:
    """After each test, kill and reap every child it left, and their orphans."""
    yield
    for _ in range(50):  # each round adopts the orphans of the one before
        children = _children()
        if not children:
            return
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = unique_name()
    yield name
    unlink_quietly(name)


@pytest.fixture
def make_queue() -> Iterator[Callable[..., MessageQueue]]:
    """Open queues with unique names; close and unlink them all afterwards."""
    opened: list[MessageQueue] = []

    def make(*args: Any, **kwargs: Any) -> MessageQueue:
        if not args or not isinstance(args[0], str):
            args = (unique_name(), *args)
        queue = MessageQueue(*args, **kwargs)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.close()
        unlink_quietly(queue.name)


@pytest.fixture
def queue(make_queue: Callable[..., MessageQueue]) -> MessageQueue:
    return make_queue(max_messages=10, max_message_size=1024)
