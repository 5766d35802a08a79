"""The pipeline of ``read`` and ``dump``: take messages from a queue and write
them to standard output (:func:`take_messages`), putting back what could not
be written out whole.

It stops only where :class:`~baseplate.message_queue.cli.signals.Stopping`
says a signal came and nothing in hand can be lost; the library does the
waiting, a slice at a time (:func:`~baseplate.message_queue.cli.signals.wait_slice`).
When it stops early, stderr says what became of each message it held:
written out, put back, or lost, and why (:class:`Account`).

It touches the queue it is given (``get_many``, ``put``, polling its
descriptor), descriptor 1 through :class:`~baseplate.message_queue.cli.output.Output`,
and stderr (notes).
"""

from __future__ import annotations

import select
import time
from typing import TYPE_CHECKING, Callable, List, Optional

from baseplate.message_queue.cli.output import Output
from baseplate.message_queue.cli.signals import Stopped, Stopping, signal_name, wait_slice
from baseplate.message_queue.cli.stdio import StreamFailed
from baseplate.message_queue.cli.words import messages, note, seconds
from baseplate.message_queue.errors import MessageQueueError, TimedOutError

if TYPE_CHECKING:  # pragma: no cover
    from baseplate.message_queue.message import Message
    from baseplate.message_queue.queue import MessageQueue

#: Most messages taken from the queue per call while reading.
READ_BATCH = 1024
#: After a signal, how long the messages in hand may take to be written out.
FINISH_BUDGET = 2.0
#: After a signal or an output error, putting messages back waits this long in all.
PUT_BACK_BUDGET = 3.0


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


def take_messages(
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
