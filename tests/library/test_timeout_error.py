"""TimedOutError is also a TimeoutError (so an OSError, errno ETIMEDOUT),
built as waiting.py builds it, and pickled as 2.0 pickled it (issue 29)."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Callable

import pytest

import baseplate.message_queue as package
from baseplate.message_queue import MessageQueue, MessageQueueError, TimedOutError
from baseplate.message_queue.errors import Wording, worded

MakeQueue = Callable[..., MessageQueue]

# -- TimedOutError is a TimeoutError ------------------------------------------


def test_timed_out_error_is_a_timeout_error_and_a_message_queue_error(
    queue: MessageQueue,
) -> None:
    assert issubclass(TimedOutError, TimeoutError)
    assert issubclass(TimedOutError, OSError)
    assert issubclass(TimedOutError, MessageQueueError)
    with pytest.raises(TimeoutError) as caught:
        queue.get(timeout=0)
    error = caught.value
    assert isinstance(error, TimedOutError)
    assert error.errno == errno.ETIMEDOUT
    assert error.strerror is None
    assert str(error) == "timed out waiting for a message in queue " + repr(queue.name)
    assert error.queue_name == queue.name
    assert error.sent == 0


def test_timed_out_error_built_as_waiting_builds_it() -> None:
    """OSError parses (errno, strerror) from two arguments: not ours."""
    words = Wording("timed out waiting for room in queue {queue}", queue="/q")
    error = worded(TimedOutError(str(words), 3), words)
    assert error.args == ("timed out waiting for room in queue '/q'",)
    assert str(error) == "timed out waiting for room in queue '/q'"
    assert (error.errno, error.strerror, error.filename) == (errno.ETIMEDOUT, None, None)
    assert error.sent == 3
    assert error.queue_name == "/q"
    bare = TimedOutError()
    assert (str(bare), bare.sent, bare.errno) == ("timed out", 0, errno.ETIMEDOUT)
    keywords = TimedOutError(message="late", sent=2)
    assert (str(keywords), keywords.sent) == ("late", 2)


def test_put_many_timed_out_says_how_many_went_out(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=2, max_message_size=16)
    with pytest.raises(OSError) as caught:  # except OSError now catches it
        queue.put_many([b"a", b"b", b"c"], timeout=0.01)
    assert isinstance(caught.value, TimedOutError)
    assert caught.value.sent == 2
    assert caught.value.errno == errno.ETIMEDOUT


# What 2.0.0 (commit b40240a) pickled for TimedOutError("...", 3) as
# waiting.send_batch builds it, with protocols 2 and 4; and the bare one.
BASE_COMMIT = "b40240a"
PICKLED_BY_2_0 = {
    2: (
        b"\x80\x02cbaseplate.message_queue\nTimedOutError\nq\x00XF\x00\x00\x00timed out "
        b"waiting for room in queue '/q' after sending 3 of 8 messagesq\x01\x85q\x02Rq\x03}q"
        b"\x04(X\x04\x00\x00\x00sentq\x05K\x03X\x05\x00\x00\x00wordsq\x06cbaseplate.message"
        b"_queue.errors\n_rebuild_words\nq\x07XT\x00\x00\x00timed out waiting for room in "
        b"queue {queue} after sending {sent} of {total} messagesq\x08}q\t(X\x05\x00\x00\x00"
        b"queueq\nX\x02\x00\x00\x00/qq\x0bh\x05K\x03X\x05\x00\x00\x00totalq\x0cK\x08u\x86q"
        b"\rRq\x0eX\n\x00\x00\x00queue_nameq\x0fh\x0bub."
    ),
    4: (
        b"\x80\x04\x95M\x01\x00\x00\x00\x00\x00\x00\x8c\x17baseplate.message_queue\x94\x8c"
        b"\rTimedOutError\x94\x93\x94\x8cFtimed out waiting for room in queue '/q' after "
        b"sending 3 of 8 messages\x94\x85\x94R\x94}\x94(\x8c\x04sent\x94K\x03\x8c\x05words"
        b"\x94\x8c\x1ebaseplate.message_queue.errors\x94\x8c\x0e_rebuild_words\x94\x93\x94"
        b"\x8cTtimed out waiting for room in queue {queue} after sending {sent} of {total} "
        b"messages\x94}\x94(\x8c\x05queue\x94\x8c\x02/q\x94h\x07K\x03\x8c\x05total\x94K\x08u"
        b"\x86\x94R\x94\x8c\nqueue_name\x94h\x0fub."
    ),
}
BARE_PICKLED_BY_2_0 = (
    b"\x80\x02cbaseplate.message_queue\nTimedOutError\nq\x00X\t\x00\x00\x00timed outq\x01"
    b"\x85q\x02Rq\x03}q\x04X\x04\x00\x00\x00sentq\x05K\x00sb."
)


def _as_send_batch_builds_it() -> TimedOutError:
    words = Wording(
        "timed out waiting for room in queue {queue} after sending {sent} of {total} messages",
        queue="/q",
        sent=3,
        total=8,
    )
    return worded(TimedOutError(str(words), 3), words)


@pytest.mark.parametrize("protocol", sorted(PICKLED_BY_2_0))
def test_a_timed_out_error_pickled_by_2_0_loads(protocol: int) -> None:
    error = pickle.loads(PICKLED_BY_2_0[protocol])
    assert type(error) is TimedOutError
    assert str(error) == "timed out waiting for room in queue '/q' after sending 3 of 8 messages"
    assert (error.sent, error.queue_name, error.errno) == (3, "/q", errno.ETIMEDOUT)
    assert error.words is not None and error.words.fields["total"] == 8
    bare = pickle.loads(BARE_PICKLED_BY_2_0)
    assert (str(bare), bare.sent, bare.errno) == ("timed out", 0, errno.ETIMEDOUT)


@pytest.mark.parametrize("protocol", sorted(PICKLED_BY_2_0))
def test_a_timed_out_error_pickles_as_2_0_pickled_it(protocol: int) -> None:
    """The same bytes as 2.0's (on PyPy too): so 2.0 loads them, as it loads its own."""
    assert pickle.dumps(_as_send_batch_builds_it(), protocol=protocol) == PICKLED_BY_2_0[protocol]
    assert pickle.dumps(TimedOutError(), protocol=2) == BARE_PICKLED_BY_2_0


def test_a_timed_out_error_pickled_now_loads_in_2_0(tmp_path: Path) -> None:
    """2.0's own source (from git), with the installed binding, loads our pickle."""
    root = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("needs the git checkout, for 2.0's source")
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", BASE_COMMIT, "src/baseplate/message_queue"],
        capture_output=True,
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {BASE_COMMIT} is not in this checkout")
    (tmp_path / "old.tar").write_bytes(archive.stdout)
    with tarfile.open(tmp_path / "old.tar") as tar:
        tar.extractall(tmp_path)
    binding = next(Path(package.__file__).parent.glob("_mqueue*.so"))
    shutil.copy(binding, tmp_path / "src/baseplate/message_queue")
    check = (
        "import pickle, sys\n"
        "import baseplate.message_queue as m\n"
        "assert m.__file__.startswith(sys.argv[1]), m.__file__\n"
        "assert not issubclass(m.TimedOutError, TimeoutError)  # 2.0's own class\n"
        "for data in sys.stdin.buffer.read().split(b'--next--'):\n"
        "    e = pickle.loads(data)\n"
        "    print(type(e).__name__, repr(str(e)), e.sent, e.queue_name)\n"
    )
    pickles = b"--next--".join(
        pickle.dumps(_as_send_batch_builds_it(), protocol=p) for p in (2, pickle.HIGHEST_PROTOCOL)
    )
    ran = subprocess.run(
        [sys.executable, "-c", check, str(tmp_path)],
        input=pickles,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "src")},
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr.decode()
    text = "timed out waiting for room in queue '/q' after sending 3 of 8 messages"
    line = f"TimedOutError {text!r} 3 /q"
    assert ran.stdout.decode().splitlines() == [line, line]


def test_a_timed_out_error_round_trips_through_pickle() -> None:
    error = pickle.loads(pickle.dumps(_as_send_batch_builds_it()))
    assert (str(error), error.sent, error.errno) == (
        "timed out waiting for room in queue '/q' after sending 3 of 8 messages",
        3,
        errno.ETIMEDOUT,
    )
