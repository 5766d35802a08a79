"""The exceptions form one hierarchy; and pickles made by 2.0 still load: they
name ``baseplate.message_queue._rebuild_message`` and
``baseplate.message_queue.errors._rebuild_words``, which stay importable.

The bytes below were made by 2.0 itself (the commit before issue 27), with
``pickle.dumps(obj)`` under CPython 3.11. (A MessageTooLargeError pickled by
2.0 does not load, in 2.0 either: its __init__ needs arguments that
BaseException's pickling does not pass. Not changed here.)
"""

from __future__ import annotations

import pickle

import baseplate.message_queue as mq
from baseplate.message_queue import (
    InvalidParametersError,
    MessageQueueError,
    MessageQueueOSError,
    MessageTooLargeError,
    QueueExistsError,
    QueueNotFoundError,
    QueuePermissionError,
    TimedOutError,
    errors,
    message,
)

MESSAGE_2_0 = (
    b"\x80\x04\x95>\x00\x00\x00\x00\x00\x00\x00\x8c\x17baseplate.message_queue\x94\x8c\x10_"
    b"rebuild_message\x94\x93\x94C\x05hello\x94K\x00\x86\x94R\x94."
)
MESSAGE_PRIORITY_2_0 = (
    b"\x80\x04\x95?\x00\x00\x00\x00\x00\x00\x00\x8c\x17baseplate.message_queue\x94\x8c\x10_"
    b"rebuild_message\x94\x93\x94C\x06urgent\x94K\x03\x86\x94R\x94."
)
WORDS_2_0 = (
    b"\x80\x04\x95c\x00\x00\x00\x00\x00\x00\x00\x8c\x1ebaseplate.message_queue.err"
    b"ors\x94\x8c\x0e_rebuild_words\x94\x93\x94\x8c\x17queue {queue} i"
    b"s closed\x94}\x94\x8c\x05queue\x94\x8c\x02/q\x94s\x86\x94R\x94."
)
CLOSED_2_0 = (
    b"\x80\x04\x95\xd2\x00\x00\x00\x00\x00\x00\x00\x8c\x17baseplate.message_queue\x94\x8c\x10Q"
    b"ueueClosedError\x94\x93\x94\x8c\x14queue '/q' is closed"
    b"\x94\x85\x94R\x94}\x94(\x8c\x04sent\x94K\x00\x8c\x05words\x94\x8c\x1ebaseplate.mes"
    b"sage_queue.errors\x94\x8c\x0e_rebuild_words\x94\x93\x94\x8c\x17q"
    b"ueue {queue} is closed\x94}\x94\x8c\x05queue\x94\x8c\x02/q\x94s\x86"
    b"\x94R\x94\x8c\nqueue_name\x94h\x0fub."
)
NOT_FOUND_2_0 = (
    b"\x80\x04\x953\x01\x00\x00\x00\x00\x00\x00\x8c\x17baseplate.message_queue\x94\x8c\x12Q"
    b"ueueNotFoundError\x94\x93\x94K\x02\x8cGqueue '/q' does "
    b"not exist: create it first, or open it w"
    b"ith create=True\x94\x86\x94R\x94}\x94(\x8c\x05words\x94\x8c\x1ebasepla"
    b"te.message_queue.errors\x94\x8c\x0e_rebuild_words"
    b"\x94\x93\x94\x8cJqueue {queue} does not exist: creat"
    b"e it first, or open it with create=True\x94"
    b"}\x94\x8c\x05queue\x94\x8c\x02/q\x94s\x86\x94R\x94\x8c\nqueue_name\x94h\x0eub."
)


def test_the_names_2_0_pickles_hold_are_importable() -> None:
    assert callable(errors._rebuild_words)
    assert callable(message._rebuild_message)
    assert mq._rebuild_message is message._rebuild_message


def test_messages_pickled_by_2_0_load() -> None:
    plain = pickle.loads(MESSAGE_2_0)
    assert plain == b"hello" and isinstance(plain, mq.Message) and plain.priority == 0
    urgent = pickle.loads(MESSAGE_PRIORITY_2_0)
    assert urgent == b"urgent" and urgent.priority == 3


def test_wording_pickled_by_2_0_loads() -> None:
    wording = pickle.loads(WORDS_2_0)
    assert isinstance(wording, errors.Wording)
    assert str(wording) == "queue '/q' is closed"


def test_errors_pickled_by_2_0_load_with_their_wording() -> None:
    closed = pickle.loads(CLOSED_2_0)
    assert isinstance(closed, mq.QueueClosedError)
    assert str(closed) == "queue '/q' is closed" and closed.queue_name == "/q"
    assert closed.words is not None and closed.words.fields == {"queue": "/q"}
    missing = pickle.loads(NOT_FOUND_2_0)
    assert isinstance(missing, mq.QueueNotFoundError) and missing.errno == 2
    assert missing.words is not None and missing.words.template.startswith("queue {queue}")


def test_pickles_made_now_load_as_2_0_made_them() -> None:
    for made_by_2_0 in (WORDS_2_0, MESSAGE_PRIORITY_2_0):
        protocol = made_by_2_0[1]  # 4, 2.0's default: 3.14 made 5 the default
        assert pickle.dumps(pickle.loads(made_by_2_0), protocol=protocol) == made_by_2_0


def test_errors_form_one_hierarchy() -> None:
    assert issubclass(TimedOutError, MessageQueueError)
    assert issubclass(InvalidParametersError, ValueError)
    assert issubclass(MessageTooLargeError, ValueError)
    for cls, base in (
        (QueueNotFoundError, FileNotFoundError),
        (QueueExistsError, FileExistsError),
        (QueuePermissionError, PermissionError),
    ):
        assert issubclass(cls, MessageQueueOSError) and issubclass(cls, base)
    assert issubclass(MessageQueueOSError, OSError) and issubclass(
        MessageQueueOSError, MessageQueueError
    )
