"""The streaming loops of ``read``, ``write``, ``dump`` and ``load``: take
messages and write them out (putting back what could not be), and read lines
and send them.

Each loop stops only where :class:`~baseplate.message_queue.cli.signals.Stopping`
says a signal came and nothing in hand can be lost; the library does the
waiting, :data:`WAIT_SLICE` seconds at a time (:func:`wait_slice`). When a
loop stops early, stderr says what became of each message it held: written
out, put back, or lost, and why (:class:`Account`).
"""

from __future__ import annotations

import select
import sys
import time
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional

from baseplate.message_queue.cli.dump_format import is_blank, longest_line, parse_dump_line
from baseplate.message_queue.cli.exits import CommandFailed
from baseplate.message_queue.cli.output import Output
from baseplate.message_queue.cli.signals import Stopped, Stopping, signal_name
from baseplate.message_queue.cli.stdio import INPUT_CHUNK, Input, StreamFailed
from baseplate.message_queue.cli.words import literal, messages, note, seconds
from baseplate.message_queue.errors import MessageQueueError, MessageTooLargeError, TimedOutError

if TYPE_CHECKING:  # pragma: no cover
    from baseplate.message_queue.message import Message
    from baseplate.message_queue.queue import MessageQueue

#: Most messages taken from the queue per call while reading.
READ_BATCH = 1024
#: While waiting for messages or room, how often (in seconds) read and write
#: look whether a signal came or their reader went away.
WAIT_SLICE = 0.05
#: After a signal, how long the messages in hand may take to be written out.
FINISH_BUDGET = 2.0
#: After a signal or an output error, putting messages back waits this long in all.
PUT_BACK_BUDGET = 3.0
#: How long ``write`` waits for room before saying (on a terminal) that the queue is full.
FULL_NOTICE_AFTER = 1.0


def wait_slice(since: Optional[float], budget: Optional[float]) -> float:
    """How long the next wait may last: WAIT_SLICE at most, and what is left of
    ``budget`` seconds counted from ``since`` (0 once it is spent)."""
    if budget is None:
        return WAIT_SLICE
    spent = 0.0 if since is None else time.monotonic() - since
    return max(0.0, min(WAIT_SLICE, budget - spent))


# -- take: read and dump ------------------------------------------------------


class Account:
    """What became of the messages held when a command stopped early."""

    def __init__(self, held: int) -> None:
        self.held = held
        self.written = 0
        self.put_back = 0
        self.why_lost = ""

    @property
    def lost(self) -> int:
        """Held, and neither written out nor put back."""
        return self.held - self.written - self.put_back

    def words(self) -> str:
        """Every message held, accounted for; empty if none was held."""
        if not self.held:
            return ""
        parts = []
        if self.written:
            parts.append(f"{self.written} written out")
        if self.put_back:
            parts.append(f"{self.put_back} put back (at the back of their priority)")
        if self.lost:
            parts.append(f"{self.lost} lost: {self.why_lost}")
        return f"of the {messages(self.held)} it held, " + "; ".join(parts)


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
    not read yet, on a pipe or Unix socket), or an output error. A queue
    this user may not write to takes nothing back: then one message is taken
    at a time, once the one before is written out.
    """
    output = Output(1, delimiter, in_flight, stopping, encode)
    can_put_back = queue.writable()
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
            if not can_put_back:
                output.flush()  # nothing taken can go back: hold one at most
                want = 1
            try:
                batch = queue.get_many(want, timeout=0)
            except TimedOutError:
                output.flush()  # about to wait: show what we have
                silent_since = silent_since or time.monotonic()
                wait = wait_slice(silent_since, timeout)
                if timeout is not None and wait <= 0:
                    break
                try:  # the library waits: a spin, then the kernel
                    batch = queue.get_many(want, timeout=wait)
                except TimedOutError:
                    output.check_reader()
                    continue
            silent_since = None
            taken += len(batch)
            output.add(batch)
        output.flush()
    except BaseException as error:
        _report(error, _give_back(queue, output, stopping, error, can_put_back))
        raise
    finally:
        output.close()
    return taken


def _give_back(
    queue: MessageQueue,
    output: Output,
    stopping: Stopping,
    error: BaseException,
    can_put_back: bool,
) -> Account:
    """After ``error``: if a signal stopped us, write out what we hold, for
    FINISH_BUDGET seconds at most; then put every message not written out
    whole back on the queue. Returns what became of them."""
    account = Account(len(output.pending))
    # The signal that stopped us is expected; one more stops the clean-up.
    signals = 1 if isinstance(error, Stopped) else stopping.count
    if isinstance(error, Stopped):
        before = output.lines_written
        try:
            output.flush(budget=FINISH_BUDGET, signals=signals)
        except StreamFailed:
            pass
        account.written = output.lines_written - before
    unwritten, output.pending = output.pending, []
    if not unwritten:
        return account
    if not can_put_back:
        account.why_lost = "the queue is read-only for this user, so nothing goes back"
        return account
    account.put_back, account.why_lost = _put_back(queue, unwritten, stopping, signals)
    return account


def _put_back(
    queue: MessageQueue, held: List[Message], stopping: Stopping, signals: int
) -> tuple[int, str]:
    """Return ``held`` to the queue (at the back of their priority), waiting for
    room at most PUT_BACK_BUDGET seconds in all; more than ``signals`` signals
    stop it. Returns how many went back, and why the others did not."""
    give_up = time.monotonic() + PUT_BACK_BUDGET
    put = 0
    try:
        while put < len(held) and stopping.count <= signals:
            message = held[put]
            try:
                queue.put(message, timeout=0, priority=message.priority)
                put += 1
                continue
            except TimedOutError:
                pass
            left = give_up - time.monotonic()
            if left <= 0:
                return put, f"the queue had no room for them within {seconds(PUT_BACK_BUDGET)} s"
            stopping.poll([(queue.fileno(), select.POLLOUT)], left)
    except MessageQueueError as error:
        return put, f"putting them back failed ({error})"
    return put, "a further signal stopped putting them back"


def _report(error: BaseException, account: Account) -> None:
    """Say, with ``error``'s words, what became of the messages held."""
    said = account.words()
    if not said:
        return
    if isinstance(error, StreamFailed) and error.message is not None:
        error.message += f"; {said}"
    elif isinstance(error, Stopped):
        note(f"stopped by {signal_name(error.signum)}: {said}")
    elif not isinstance(error, StreamFailed):
        note(f"stopped: {said}")
    elif account.lost:  # a reader that went away is no news, unless that lost messages
        note(f"the reader of standard output went away: {said}")


# -- send: write and load -------------------------------------------------------


class Lines:
    """Standard input as lines, a chunk at a time; the lines of one chunk come
    together. Memory stays bounded: a line that grows longer than ``longest``
    ends the reading, at that line, without reading the rest of it."""

    def __init__(self, source: Input, delimiter: bytes, longest: int) -> None:
        self.source = source
        self.delimiter = delimiter
        self.longest = longest
        self.number = 0  # of the last line handed out, counting every one

    def batches(self, too_long: Callable[[int], None]) -> Iterator[List[bytes]]:
        """The lines, in batches; ``too_long(number)`` raises for a line too long."""
        partial: List[bytes] = []  # the pieces of the line not ended yet
        size = 0  # their length
        while True:
            chunk = self.source.read(INPUT_CHUNK)
            if not chunk:
                if partial:  # a last line without its delimiter
                    self.number += 1
                    yield [b"".join(partial)]
                return
            pieces = chunk.split(self.delimiter)
            if len(pieces) == 1:  # no delimiter: the line goes on
                partial.append(chunk)
                size += len(chunk)
            else:
                if partial:
                    pieces[0] = b"".join([*partial, pieces[0]])
                last = pieces.pop()
                partial, size = ([last], len(last)) if last else ([], 0)
                self.number += len(pieces)
                yield pieces
            if size > self.longest:
                too_long(self.number + 1)


def produce(
    queue: MessageQueue,
    priority: int,
    timeout: Optional[float],
    delimiter: bytes,
    stopping: Stopping,
) -> int:
    """Send stdin to ``queue``, a message per delimited line, streaming; return the count."""
    sender = Sender(queue, timeout, stopping)
    limit = queue.max_message_size

    def too_long(number: int) -> None:
        raise CommandFailed(
            f"line {number} has more than {limit} bytes, the queue's max_message_size; "
            f"the {number - 1} line(s) before it were sent, nothing after it"
        )

    try:
        for lines in Lines(Input(0, stopping), delimiter, limit).batches(too_long):
            sender.send(lines, priority)
    except Stopped:
        note(f"interrupted: {sender.sent} line(s) were sent; the rest of the input was not")
        raise
    return sender.sent


def restore(queue: MessageQueue, timeout: Optional[float], stopping: Stopping) -> int:
    """Send the messages of dump's lines on stdin, in order, with their
    priorities; stop at a bad line, after the lines before it. Blank lines
    are skipped. Return the count."""
    sender = Sender(queue, timeout, stopping)
    longest = longest_line(queue.max_message_size)
    lines = Lines(Input(0, stopping), b"\n", longest)

    def too_long(number: int) -> None:
        raise CommandFailed(
            f"line {number} has more than {longest} bytes: longer than any line of dump's "
            f"format that can fit queue {literal(queue.name)} (max_message_size "
            f"{queue.max_message_size}); the {sender.sent} message(s) before it were loaded, "
            "nothing after it"
        )

    try:
        for batch in lines.batches(too_long):
            first = lines.number - len(batch) + 1
            _restore_batch(sender, batch, first)
    except Stopped:
        note(f"interrupted: {sender.sent} message(s) were loaded; the rest were not")
        raise
    return sender.sent


def _restore_batch(sender: Sender, lines: List[bytes], first: int) -> None:
    """Send the messages of ``lines`` (line ``first`` on), grouped by priority."""
    group: List[bytes] = []
    group_priority = 0
    for number, line in enumerate(lines, first):
        if is_blank(line):
            continue
        try:
            priority, message = parse_dump_line(line)
        except ValueError as error:
            if group:
                sender.send(group, group_priority)
            raise CommandFailed(
                f"line {number} is not a message of dump's format: {error}; the "
                f"{sender.sent} message(s) before it were loaded, nothing after it"
            ) from None
        if group and priority != group_priority:
            sender.send(group, group_priority)
            group = []
        group.append(message)
        group_priority = priority
    if group:
        sender.send(group, group_priority)


class Sender:
    """Sends lines in batches and counts exactly what went out. The library
    waits for room, WAIT_SLICE seconds at a time, so that a signal (which
    only marks that we must stop) is seen soon."""

    def __init__(self, queue: MessageQueue, timeout: Optional[float], stopping: Stopping) -> None:
        self.queue = queue
        self.timeout = timeout
        self.stopping = stopping
        self.sent = 0
        self.told_full = False

    def send(self, lines: List[bytes], priority: int) -> None:
        """Send ``lines``, in order, with ``priority``."""
        waiting_since: Optional[float] = None
        while lines:
            self.stopping.check()
            wait = wait_slice(waiting_since, self.timeout)
            try:  # the library waits for room: a spin, then the kernel
                self.sent += self.queue.put_many(lines, timeout=wait, priority=priority)
                return
            except MessageTooLargeError as error:
                index = error.index or 0
                if index:
                    self.send(lines[:index], priority)
                raise CommandFailed(
                    f"line {self.sent + 1} has {error.size} bytes, more than the queue's "
                    f"max_message_size of {error.max_message_size}; the {self.sent} "
                    "line(s) before it were sent, nothing after it"
                ) from None
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
                    f"timed out after {seconds(self.timeout)} s waiting for room in queue "
                    f"{literal(self.queue.name)}; {self.sent} line(s) were sent"
                )
            if not self.told_full and now - waiting_since >= FULL_NOTICE_AFTER:
                self._tell_full()

    def _tell_full(self) -> None:
        self.told_full = True
        if sys.stderr.isatty():
            note(
                f"queue {literal(self.queue.name)} is full ({self.queue.current_messages} of "
                f"{self.queue.max_messages} messages): waiting for a reader to take some "
                "(Ctrl-C stops)"
            )
