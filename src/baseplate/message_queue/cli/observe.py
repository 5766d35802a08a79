"""What an operator watches: every queue of the mqueue file system (checked
to be this IPC namespace's), one queue, their holders, in three formats
(table, JSON, Prometheus' text format), once or every ``--watch SECONDS``,
on standard output or atomically into a ``--textfile`` for node_exporter.

It opens queues (to read their sizes; and one probe queue, created and
removed at once, when no queue can be opened to tell the namespace), walks
``/proc`` once per refresh (:func:`~baseplate.message_queue.system.queue_holders`),
writes standard output and the text file, and waits between refreshes
where a signal ends it (:class:`~baseplate.message_queue.cli.signals.Stopping`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import click

from baseplate.message_queue import system
from baseplate.message_queue.cli import signals
from baseplate.message_queue.cli.exits import CommandFailed
from baseplate.message_queue.cli.queues import (
    LS_COLUMNS,
    LS_HEADER,
    _cell,
    _change,
    add_holders,
    as_json,
    as_table,
    as_text,
    queue_facts,
    stat_facts,
)
from baseplate.message_queue.cli.signals import Stopping
from baseplate.message_queue.cli.words import describe, note, say_error, shell_word
from baseplate.message_queue.errors import MessageQueueError, QueueNotFoundError

Facts = Dict[str, Any]


def another_namespace(mount: str) -> str:
    """What ``ls`` says when the mqueue file system at ``mount`` is not this
    process's IPC namespace's."""
    return (
        f"the mqueue file system mounted at {shell_word(mount)} belongs to another IPC "
        "namespace (the host's, or another container's), so its queues are not the ones "
        "this process opens, and they are not listed. Mount this namespace's own, as root, "
        "in a mount namespace of its own so that the other one keeps its mount: "
        f"unshare --mount sh -c 'mount -t mqueue none {shell_word(mount)} && baseplate-mq ls'"
        " (or, in a container, mount it in the container)"
    )


def not_mounted() -> CommandFailed:
    return CommandFailed(
        "the mqueue file system is not mounted, so the queues cannot be listed; "
        f"mount it as root: {system.MOUNT_COMMAND}"
    )


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Signals are only noted inside (a signal still ends the command, at
    the end): what is begun there, a probe queue or a text file, is always
    cleaned up. Inside ``--watch``'s loop, which defers them already, nothing
    changes."""
    if signals._noted.deferred:
        yield
        return
    with Stopping():
        yield


# The device a probe found: a process stays in its IPC namespace, so
# --watch probes once, not at every refresh.
_probed: List[int] = []


def probe_device() -> Optional[int]:
    """The ``st_dev`` of this IPC namespace's mqueue file system, from a
    probe queue (1 x 1 byte, mode 600) removed at once; None if none can be
    created (the ``ulimit -q`` spent, queues_max reached...)."""
    if _probed:
        return _probed[0]
    from baseplate.message_queue.queue import MessageQueue  # loads the binding

    name = f"/baseplate-mq-probe-{os.getpid()}-{os.urandom(8).hex()}"
    with signals_deferred():
        try:
            probe = MessageQueue(name, 1, 1, mode=0o600, exclusive=True)
        except MessageQueueError:
            return None
        with probe:
            with contextlib.suppress(MessageQueueError):
                probe.unlink()
            _probed.append(os.fstat(probe.fileno()).st_dev)
            return _probed[0]


def list_queues() -> List[Facts]:
    """The facts of every queue in the mounted mqueue file system, by name,
    holders included; fails if it is not mounted, or is not this IPC
    namespace's (told by the device of the queues opened, or of a probe)."""
    from baseplate.message_queue.queue import MessageQueue  # loads the binding

    mount = system.mqueue_mount()
    if mount is None:
        raise not_mounted()
    device = system.mount_device(mount)
    try:
        entries = sorted(os.listdir(mount))
    except OSError as error:
        raise CommandFailed(f"cannot list {shell_word(mount)}: {error.strerror}") from None
    queues = []
    opened = set()
    for entry in entries:
        name = "/" + entry
        try:
            with MessageQueue(name, create=False) as queue:
                facts: Optional[Facts] = queue_facts(queue)
        except QueueNotFoundError:
            continue  # unlinked meanwhile; or not this namespace's: checked below
        except MessageQueueError:  # not ours to open: what the file system shows
            facts = stat_facts(name, os.path.join(mount, entry))
        else:
            opened.add(facts["_key"][0])  # type: ignore[index]
        if facts is not None:
            queues.append(facts)
    if device is not None:
        if not opened:
            probed = probe_device()
            opened = set() if probed is None else {probed}
        if opened - {device}:
            raise CommandFailed(another_namespace(mount))
    add_holders(queues, device)
    return queues


def one_queue(name: str) -> Facts:
    """The facts of queue ``name``, holders included (never creates it)."""
    from baseplate.message_queue.queue import MessageQueue  # loads the binding

    with MessageQueue(name, create=False) as queue:
        facts = queue_facts(queue)
    mount = system.mqueue_mount()
    add_holders([facts], None if mount is None else system.mount_device(mount))
    return facts


# Prometheus: each metric, its help, and the fact it shows (every one a gauge).
METRICS: Tuple[Tuple[str, str, str], ...] = (
    ("posix_mqueue_messages", "Messages waiting in the POSIX message queue.", "current_messages"),
    (
        "posix_mqueue_max_messages",
        "How many messages the POSIX message queue holds at most.",
        "max_messages",
    ),
    (
        "posix_mqueue_max_message_size_bytes",
        "The longest message the POSIX message queue takes, in bytes.",
        "max_message_size",
    ),
    (
        "posix_mqueue_holders",
        "Processes that have the POSIX message queue open (of those this user may inspect).",
        "holders",
    ),
    (
        "posix_mqueue_info",
        "The owner, group and mode of the POSIX message queue (value 1).",
        "info",
    ),
)


def label_value(text: str) -> str:
    """``text`` as a label value of Prometheus' text format: UTF-8 (a name
    that is not UTF-8 becomes the shell word the CLI prints), with
    backslash, double quote and newline escaped as the format requires, so
    that no value can end its line or its quotes."""
    try:
        os.fsencode(text).decode("utf-8")
    except UnicodeDecodeError:
        text = shell_word(text)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: List[Tuple[str, str]]) -> str:
    return "{" + ",".join(f'{key}="{label_value(value)}"' for key, value in pairs) + "}"


def as_prometheus(queues: List[Facts]) -> str:
    """``queues`` in Prometheus' text exposition format, as node_exporter's
    textfile collector reads it. A queue this user may not open shows only
    what can be known of it: its holders and its info."""
    lines = []
    for metric, help_text, key in METRICS:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        for facts in queues:
            pairs = [("queue", facts["name"])]
            if key == "info":
                owner = facts["owner"] if facts["owner"] is not None else str(facts["uid"])
                group = facts["group"] if facts["group"] is not None else str(facts["gid"])
                pairs += [("owner", owner), ("group", group), ("mode", f"{facts['mode']:04o}")]
                value: Optional[int] = 1
            elif key == "holders":
                value = len(facts["holders"])
            else:
                value = facts[key]
            if value is not None:
                lines.append(f"{metric}{_labels(pairs)} {value}")
    return "\n".join(lines) + "\n"


def write_textfile(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically: into a temporary file in the
    same directory (whose name does not end in ``.prom``, so the collector
    never reads it half written), then renamed over ``path``. On failure,
    one line (exit 1), and no temporary file is left."""
    import tempfile  # only here: --help starts fast

    directory = os.path.dirname(path) or "."
    with signals_deferred():
        try:
            fd, temporary = tempfile.mkstemp(
                prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
            )
        except OSError as error:
            raise CommandFailed(
                f"cannot write {shell_word(path)}: {error.strerror}: {shell_word(directory)}"
            ) from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
                mask = os.umask(0o022)
                os.umask(mask)
                os.fchmod(file.fileno(), 0o666 & ~mask)
            os.rename(temporary, path)
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            if isinstance(error, OSError):
                raise CommandFailed(f"cannot write {shell_word(path)}: {error.strerror}") from None
            raise


def clock() -> str:
    """The local time of a refresh."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


def show_once(queues: List[Facts], form: str, single: bool, textfile: Optional[str]) -> None:
    """Print ``queues`` (or the one queue, for ``info``) once, in ``form``;
    or, with ``textfile``, write them there in Prometheus' format."""
    if textfile is not None:
        write_textfile(textfile, as_prometheus(queues))
        return
    if form == "prometheus":
        click.echo(as_prometheus(queues), nl=False)
    elif form == "json":
        shown: Any = as_json(queues[0]) if single else [as_json(facts) for facts in queues]
        click.echo(json.dumps(shown))
    elif single:
        click.echo("\n".join(as_text(queues[0])))
    else:
        click.echo(as_table(queues))
        _uninspected(queues)


def _uninspected(queues: List[Facts]) -> None:
    """Say on stderr that holders may be missing, when some processes could
    not be inspected (other users', as an ordinary user)."""
    hidden = queues[0]["uninspected_processes"] if queues else 0
    if hidden:
        note(
            f"{hidden} processes of other users could not be inspected: HOLDERS counts only "
            "those this user may see (root sees them all)"
        )


# --watch into a pipe or a file: these columns, a line per queue per refresh.
ROLLING_HEADER = "TIME                 MESSAGES  CHANGE    FILL  HOLDERS  NAME"
# --watch on a terminal: ls's table, with the change since the last refresh.
WATCH_HEADER = (LS_HEADER[0], "CHANGE", *LS_HEADER[1:])
WATCH_COLUMNS = (LS_COLUMNS[0], "change", *LS_COLUMNS[1:])
#: Clears a terminal and puts the cursor at its top left (as ``watch`` does).
CLEAR = "\x1b[H\x1b[2J"


def watch(
    interval: float,
    refresh: Callable[[], List[Facts]],
    form: str,
    single: bool,
    textfile: Optional[str],
    title: str,
) -> None:
    """Refresh every ``interval`` seconds until a signal ends it: on a
    terminal, redrawn in place; into a pipe or a file, rolling lines. Each
    refresh shows the change in depth since the one before, and a clock. A
    refresh that fails says so on its line, and the next one comes."""
    terminal = textfile is None and form == "table" and sys.stdout.isatty()
    before: Dict[str, Optional[int]] = {}
    header_done = False
    with Stopping() as stopping:
        next_at = time.monotonic()
        while True:
            now = clock()
            try:
                queues = refresh()
                error = None
            except (CommandFailed, MessageQueueError, OSError) as failure:
                queues, error = [], _failure_text(failure)
            for facts in queues:
                last = before.get(facts["name"])
                current = facts["current_messages"]
                facts["change"] = None if last is None or current is None else current - last
            before = {facts["name"]: facts["current_messages"] for facts in queues}
            if textfile is not None:
                if error is None:
                    write_textfile(textfile, as_prometheus(queues))
                else:
                    say_error(f"{now}: {error}")
            elif terminal:
                body = f"error: {error}" if error is not None else _terminal_body(queues, single)
                click.echo(f"{CLEAR}Every {interval:g}s: {title}    {now}\n\n{body}")
            elif form == "json":
                shown: Dict[str, Any] = {"time": now}
                if error is not None:
                    shown["error"] = error
                elif single:
                    shown.update(as_json(queues[0]), change=queues[0]["change"])
                else:
                    shown["queues"] = [
                        dict(as_json(facts), change=facts["change"]) for facts in queues
                    ]
                click.echo(json.dumps(shown))
            elif form == "prometheus":
                if error is None:
                    click.echo(as_prometheus(queues), nl=False)
                else:
                    say_error(f"{now}: {error}")
            else:
                if not header_done:
                    click.echo(ROLLING_HEADER)
                    header_done = True
                click.echo(_rolling(now, queues, error))
            next_at += interval
            next_at = max(next_at, time.monotonic())
            while (left := next_at - time.monotonic()) > 0:
                stopping.check()
                stopping.poll([], left)
            stopping.check()


def _failure_text(failure: BaseException) -> str:
    if isinstance(failure, CommandFailed):
        return failure.message
    if isinstance(failure, MessageQueueError):
        return describe(failure)
    assert isinstance(failure, OSError)
    return f"{failure.strerror or failure}"


def _terminal_body(queues: List[Facts], single: bool) -> str:
    if single:
        return "\n".join([*as_text(queues[0]), f"change: {_change(queues[0]['change'])}"])
    return as_table(queues, WATCH_HEADER, WATCH_COLUMNS)


def _rolling(now: str, queues: List[Facts], error: Optional[str]) -> str:
    """A refresh as rolling lines: one per queue, each with the time."""
    if error is not None:
        return f"{now}  error: {error}"
    if not queues:
        return f"{now}  (no queues)"
    return "\n".join(
        f"{now}  {_cell('current_messages', facts):>8}  {_cell('change', facts):>6}  "
        f"{_cell('fill_percent', facts):>6}  {_cell('holders', facts):>7}  "
        f"{_cell('name', facts)}"
        for facts in queues
    )
