"""The pipeline of ``write`` and ``load``: read standard input as lines and
send them to a queue, a message per line (:func:`send_lines`), or a message
per line of dump's format, with its priority (:func:`load_dump`).

It stops only where :class:`~baseplate.message_queue.cli.signals.Stopping`
says a signal came; the library waits for room, a slice at a time
(:func:`~baseplate.message_queue.cli.signals.wait_slice`). It touches the
queue it is given (``put_many``, and its size and fill for a notice),
descriptor 0 through :class:`~baseplate.message_queue.cli.stdio.Input`, and
stderr (notes).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional

from baseplate.message_queue.cli.dump_format import is_blank, longest_line, parse_dump_line
from baseplate.message_queue.cli.exits import CommandFailed
from baseplate.message_queue.cli.signals import Stopped, Stopping, wait_slice
from baseplate.message_queue.cli.stdio import INPUT_CHUNK, Input
from baseplate.message_queue.cli.words import note, seconds, shell_word
from baseplate.message_queue.errors import MessageTooLargeError, TimedOutError

if TYPE_CHECKING:  # pragma: no cover
    from baseplate.message_queue.queue import MessageQueue

#: How long ``write`` waits for room before saying (on a terminal) that the queue is full.
FULL_NOTICE_AFTER = 1.0


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


def send_lines(
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


def load_dump(queue: MessageQueue, timeout: Optional[float], stopping: Stopping) -> int:
    """Send the messages of dump's lines on stdin, in order, with their
    priorities; stop at a bad line, after the lines before it. Blank lines
    are skipped. Return the count."""
    sender = Sender(queue, timeout, stopping)
    longest = longest_line(queue.max_message_size)
    lines = Lines(Input(0, stopping), b"\n", longest)

    def too_long(number: int) -> None:
        raise CommandFailed(
            f"line {number} has more than {longest} bytes: longer than any line of dump's "
            f"format that can fit queue {shell_word(queue.name)} (max_message_size "
            f"{queue.max_message_size}); the {sender.sent} message(s) before it were loaded, "
            "nothing after it"
        )

    try:
        for batch in lines.batches(too_long):
            first = lines.number - len(batch) + 1
            _load_batch(sender, batch, first)
    except Stopped:
        note(f"interrupted: {sender.sent} message(s) were loaded; the rest were not")
        raise
    return sender.sent


def _load_batch(sender: Sender, lines: List[bytes], first: int) -> None:
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
                    f"{shell_word(self.queue.name)}; {self.sent} line(s) were sent"
                )
            if not self.told_full and now - waiting_since >= FULL_NOTICE_AFTER:
                self._tell_full()

    def _tell_full(self) -> None:
        self.told_full = True
        if sys.stderr.isatty():
            note(
                f"queue {shell_word(self.queue.name)} is full ({self.queue.current_messages} of "
                f"{self.queue.max_messages} messages): waiting for a reader to take some "
                "(Ctrl-C stops)"
            )
