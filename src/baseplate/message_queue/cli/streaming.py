"""The streaming loops of ``read``, ``write``, ``dump`` and ``load``: take
messages and write them out (putting back what could not be), and read lines
and send them.

Each loop stops only where :class:`~baseplate.message_queue.cli.signals.Stopping`
says a signal came and nothing in hand can be lost; the library does the
waiting, WAIT_SLICE seconds at a time.
"""

from __future__ import annotations

import select
import sys
import time
from typing import TYPE_CHECKING, Callable, List, Optional

from baseplate.message_queue.cli.dump_format import parse_dump_line
from baseplate.message_queue.cli.exits import CommandFailed
from baseplate.message_queue.cli.signals import Stopped, Stopping
from baseplate.message_queue.cli.stdio import INPUT_CHUNK, Input, Output
from baseplate.message_queue.cli.words import fail, note
from baseplate.message_queue.errors import MessageQueueError, MessageTooLargeError, TimedOutError

if TYPE_CHECKING:  # pragma: no cover
    from baseplate.message_queue.message import Message
    from baseplate.message_queue.queue import MessageQueue

#: Most messages taken from the queue per call while reading.
READ_BATCH = 1024

#: While waiting for messages or room, how often (in seconds) read and write
#: look whether a signal came or their reader went away.
WAIT_SLICE = 0.05

#: By default, on a pipe or socket, how many messages may be taken from the
#: queue and not yet read by the reader: all that can be lost if it quits.
DEFAULT_IN_FLIGHT = 1
#: After a signal or an output error, putting messages back waits this long in all.
PUT_BACK_BUDGET = 3.0
#: After a signal, how long the messages in hand may take to be written out.
FINISH_BUDGET = 2.0
#: How long ``write`` waits for room before saying (on a terminal) that the queue is full.
FULL_NOTICE_AFTER = 1.0


def consume(
    queue: MessageQueue,
    count: Optional[int],
    timeout: Optional[float],
    delimiter: bytes,
    in_flight: int,
    stopping: Stopping,
    encode: Optional[Callable[[Message], bytes]] = None,
) -> int:
    """Write messages from ``queue`` to stdout until ``count`` or ``timeout``; return the count.

    Every message taken is written out whole or put back, whatever happens:
    a signal, a reader that quits (except up to ``in_flight`` messages it had
    not read yet, on a pipe or socket), or an output error.
    """
    output = Output(1, delimiter, in_flight, stopping, encode)
    taken = 0
    silent_since: Optional[float] = None  # when the queue was last found empty
    try:
        while count is None or taken < count:
            stopping.check()
            room = output.room()
            if room == 0:
                output.wait_for_reader()
                continue
            want = READ_BATCH if count is None else min(READ_BATCH, count - taken)
            want = want if room is None else min(want, room)
            try:
                messages = queue.get_many(want, timeout=0)
            except TimedOutError:
                output.flush()  # about to wait: show what we have
                silent_since = silent_since or time.monotonic()
                wait = WAIT_SLICE
                if timeout is not None:
                    wait = min(wait, silent_since + timeout - time.monotonic())
                    if wait <= 0:
                        break
                try:  # the library waits: a spin, then the kernel
                    messages = queue.get_many(want, timeout=wait)
                except TimedOutError:
                    output.check_reader()
                    continue
            silent_since = None
            taken += len(messages)
            output.add(messages)
        output.flush()
    except BaseException as error:
        _give_back(queue, output, stopping, error)
        raise
    finally:
        output.close()
    return taken


def _give_back(
    queue: MessageQueue, output: Output, stopping: Stopping, error: BaseException
) -> None:
    """After ``error``: if a signal stopped us, write out what we hold, for
    FINISH_BUDGET seconds at most; then put every message not written out
    whole back on the queue."""
    # The signal that stopped us is expected; one more stops the clean-up.
    signals = 1 if isinstance(error, Stopped) else stopping.count
    if isinstance(error, Stopped):
        try:
            output.flush(budget=FINISH_BUDGET, signals=signals)
        except (OSError, CommandFailed):
            pass
    unwritten = output.unwritten()
    output.pending = []
    if unwritten:
        _put_back(queue, unwritten, stopping, signals)


def _put_back(
    queue: MessageQueue, messages: List[Message], stopping: Stopping, signals: int
) -> None:
    """Return ``messages`` to the queue (at the back of their priority), waiting
    for room at most PUT_BACK_BUDGET seconds in all; more than ``signals``
    signals stop it. Says on stderr what could not be put back."""
    give_up = time.monotonic() + PUT_BACK_BUDGET
    put = 0
    try:
        while put < len(messages) and stopping.count <= signals:
            message = messages[put]
            try:
                queue.put(message, timeout=0, priority=message.priority)
                put += 1
                continue
            except TimedOutError:
                pass
            left = give_up - time.monotonic()
            if left <= 0:
                break
            stopping.poll([(queue.fileno(), select.POLLOUT)], left)
    except MessageQueueError:
        pass
    lost = len(messages) - put
    if lost:
        why = "a further signal stopped" if stopping.count > signals else "no room for"
        fail(
            f"{lost} message(s) taken from the queue were neither written out nor put back "
            f"({why} putting them back); {put} were put back"
        )


def produce(
    queue: MessageQueue,
    priority: int,
    timeout: Optional[float],
    delimiter: bytes,
    stopping: Stopping,
) -> int:
    """Send stdin to ``queue``, a message per delimited line, streaming; return the count."""
    source = Input(0, stopping)
    sender = Sender(queue, priority, timeout, stopping)
    limit = queue.max_message_size
    partial = b""
    try:
        while True:
            chunk = source.read(INPUT_CHUNK)
            if not chunk:
                break
            lines = (partial + chunk if partial else chunk).split(delimiter)
            partial = lines.pop()
            if lines:
                sender.send(lines)
            if len(partial) > limit:  # it can only grow: no need to read it all
                _too_long(sender.sent + 1, len(partial), limit, more=True)
        if partial:
            sender.send([partial])
    except Stopped:
        note(f"interrupted: {sender.sent} line(s) were sent; the rest of the input was not")
        raise
    return sender.sent


class Sender:
    """Sends lines in batches and counts exactly what went out. The library
    waits for room, WAIT_SLICE seconds at a time, so that a signal (which
    only marks that we must stop) is seen soon."""

    def __init__(
        self, queue: MessageQueue, priority: int, timeout: Optional[float], stopping: Stopping
    ) -> None:
        self.queue = queue
        self.priority = priority
        self.timeout = timeout
        self.stopping = stopping
        self.sent = 0
        self.told_full = False

    def send(self, lines: List[bytes], priority: Optional[int] = None) -> None:
        """Send ``lines``, in order, with ``priority`` (the command's by default)."""
        priority = self.priority if priority is None else priority
        waiting_since: Optional[float] = None
        while lines:
            self.stopping.check()
            wait = WAIT_SLICE
            if self.timeout is not None:
                spent = 0.0 if waiting_since is None else time.monotonic() - waiting_since
                wait = max(0.0, min(wait, self.timeout - spent))
            try:  # the library waits for room: a spin, then the kernel
                self.sent += self.queue.put_many(lines, timeout=wait, priority=priority)
                return
            except MessageTooLargeError as error:
                index = error.index or 0
                if index:
                    self.send(lines[:index], priority)
                _too_long(self.sent + 1, error.size, error.max_message_size)
            except TimedOutError as error:  # still full: some may have gone out
                self.sent += error.sent
                lines = lines[error.sent :]
                if error.sent:
                    waiting_since = None
            now = time.monotonic()
            if waiting_since is None:
                waiting_since = now - wait
            if self.timeout is not None and now - waiting_since >= self.timeout:
                raise CommandFailed(
                    f"timed out after {self.timeout:g} s waiting for room in queue "
                    f"{self.queue.name}; {self.sent} line(s) were sent"
                )
            if not self.told_full and now - waiting_since >= FULL_NOTICE_AFTER:
                self._tell_full()

    def _tell_full(self) -> None:
        self.told_full = True
        if sys.stderr is not None and sys.stderr.isatty():
            depth = self.queue.max_messages
            note(
                f"queue {self.queue.name} is full ({self.queue.current_messages} of {depth} "
                "messages): waiting for a reader to take some (Ctrl-C stops)"
            )


def _too_long(line: int, size: int, limit: int, more: bool = False) -> None:
    raise CommandFailed(
        f"line {line} has {size}{'+' if more else ''} bytes, more than the queue's "
        f"max_message_size of {limit}; the {line - 1} line(s) before it were sent, "
        "nothing after it"
    )


def restore(queue: MessageQueue, timeout: Optional[float], stopping: Stopping) -> int:
    """Send the messages of dump's lines on stdin, in order, with their
    priorities; stop at a bad line, after the lines before it. Return the count."""
    source = Input(0, stopping)
    sender = Sender(queue, 0, timeout, stopping)
    partial = b""
    number = 0  # of the last line parsed
    try:
        while True:
            chunk = source.read(INPUT_CHUNK)
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop() if chunk else b""
            if not chunk and lines == [b""]:
                break
            batch: List[bytes] = []
            batch_priority = 0
            problem = None
            for line in lines:
                try:
                    priority, message = parse_dump_line(line)
                except ValueError as error:
                    problem = f"line {number + 1} is not a message of dump's format: {error}"
                    break
                number += 1
                if batch and priority != batch_priority:
                    sender.send(batch, batch_priority)
                    batch = []
                batch.append(message)
                batch_priority = priority
            if batch:
                sender.send(batch, batch_priority)
            if problem:
                raise CommandFailed(
                    f"{problem}; the {number} line(s) before it were loaded, nothing after it"
                )
            if not chunk:
                break
    except Stopped:
        note(f"interrupted: {sender.sent} message(s) were loaded; the rest were not")
        raise
    return sender.sent
