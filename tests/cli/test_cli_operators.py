"""Issue 32, operators: fill and holders in ls and info, --watch, the
Prometheus format and --textfile, ls in another IPC namespace, and advice
for a missing queue. Real queues, real holder processes (spawned, then
killed and reaped), real pipes and terminals."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest
from prometheus_client.parser import text_string_to_metric_families

from baseplate.message_queue import MessageQueue, system
from baseplate.message_queue.cli import observe
from baseplate.message_queue.cli.words import shell_word
from helpers import BPMQ, NOBODY, need_root, run, run_cli_as_nobody, unlink_quietly

MakeQueue = Callable[..., MessageQueue]

# A holder: opens the queue (argv[1]), says so, and sleeps until killed.
HOLD = (
    "import sys, time\n"
    "from baseplate.message_queue import MessageQueue\n"
    "q = MessageQueue(sys.argv[1], create=False)\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)
# The same, also registered for notification (by a signal it ignores).
HOLD_AND_NOTIFY = HOLD.replace(
    "print(",
    "import signal; signal.signal(signal.SIGUSR2, signal.SIG_IGN)\n"
    "q.notify(signal.SIGUSR2)\nprint(",
)


@pytest.fixture
def holders() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start processes that hold a queue; kill and reap them afterwards."""
    started: List[subprocess.Popen[bytes]] = []

    def start(name: str, *extra: str, script: str = HOLD) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            [sys.executable, "-c", script, name, *extra], stdout=subprocess.PIPE
        )
        started.append(child)
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        return child

    yield start
    for child in started:
        child.kill()
        child.wait()


def no_control_bytes(data: bytes) -> bool:
    return not any((byte < 0x20 and byte not in (0x0A,)) or byte == 0x7F for byte in data)


def ls_json() -> List[Dict[str, Any]]:
    result = run([*BPMQ, "ls", "--json"])
    assert result.returncode == 0, result.stderr
    listed: List[Dict[str, Any]] = json.loads(result.stdout)
    return listed


def find(listed: List[Dict[str, Any]], name: str) -> Dict[str, Any]:
    return next(facts for facts in listed if facts["name"] == name)


# Fill, holders, notification ---------------------------------------------


def test_ls_and_info_show_fill_and_the_processes_that_hold_a_queue(
    make_queue: MakeQueue, holders: Callable[..., subprocess.Popen[bytes]]
) -> None:
    queue = make_queue(max_messages=4, max_message_size=16)
    queue.put(b"one")
    child = holders(queue.name)
    facts = find(ls_json(), queue.name)
    assert facts["fill_percent"] == 25.0 and facts["current_messages"] == 1
    pids = {holder["pid"] for holder in facts["holders"]}
    # This test's process holds it too; the command's own process is left out.
    assert pids == {child.pid, os.getpid()}
    held = next(holder for holder in facts["holders"] if holder["pid"] == child.pid)
    assert held["uid"] == os.geteuid() and held["user"] == system.user_name(os.geteuid())
    assert held["command"].startswith(shell_word(sys.executable) + " -c ")
    assert held["command"].endswith(" " + queue.name)
    info = json.loads(run([*BPMQ, "info", queue.name, "--format", "json"]).stdout)
    assert {holder["pid"] for holder in info["holders"]} == pids
    text = run([*BPMQ, "info", queue.name]).stdout.decode()
    assert "fill_percent: 25%\n" in text and "holders: 2\n" in text
    assert f"holder: {child.pid} " in text
    row = next(
        line for line in run([*BPMQ, "ls"]).stdout.decode().splitlines() if queue.name in line
    )
    assert row.split() == ["1", "4", "25%", "16", "0600", facts["owner"], "2", queue.name]
    child.kill()
    child.wait()
    facts = find(ls_json(), queue.name)
    assert [holder["pid"] for holder in facts["holders"]] == [os.getpid()]


def test_a_holder_is_matched_by_device_and_inode_not_by_its_links_text(
    make_queue: MakeQueue, tmp_path: Path, holders: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """A file whose path reads like the queue's name is not a holder."""
    queue = make_queue(max_messages=1, max_message_size=1)
    decoy = tmp_path / queue.name.lstrip("/")
    decoy.write_text("")
    script = "import sys, time; f = open(sys.argv[1]); print('ready', flush=True); time.sleep(600)"
    child = holders(str(decoy), script=script)
    facts = find(ls_json(), queue.name)
    assert child.pid not in {holder["pid"] for holder in facts["holders"]}


def test_a_holders_hostile_command_line_is_escaped_everywhere(
    make_queue: MakeQueue, holders: Callable[..., subprocess.Popen[bytes]]
) -> None:
    queue = make_queue(max_messages=1, max_message_size=1)
    hostile = '\n\x1b[31mevil"}\\ 1\nposix_mqueue_holders{queue="x"} 99'
    child = holders(queue.name, hostile)
    text = run([*BPMQ, "info", queue.name])
    assert no_control_bytes(text.stdout)
    line = next(row for row in text.stdout.decode().splitlines() if f"holder: {child.pid} " in row)
    assert line.endswith(" " + shell_word(hostile))
    table = run([*BPMQ, "ls"]).stdout
    assert no_control_bytes(table) and b"\x1b" not in table
    facts = find(ls_json(), queue.name)
    held = next(holder for holder in facts["holders"] if holder["pid"] == child.pid)
    assert held["command"].endswith(" " + shell_word(hostile)) and "\n" not in held["command"]
    exposition = run([*BPMQ, "ls", "--format", "prometheus"]).stdout.decode()
    samples = [
        sample
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.labels.get("queue") == "x"
    ]
    assert samples == []  # no line forged


def test_notify_pid_is_the_process_registered_for_notification(
    make_queue: MakeQueue, holders: Callable[..., subprocess.Popen[bytes]]
) -> None:
    queue = make_queue(max_messages=1, max_message_size=1)
    assert find(ls_json(), queue.name)["notify_pid"] == 0
    child = holders(queue.name, script=HOLD_AND_NOTIFY)
    assert find(ls_json(), queue.name)["notify_pid"] == child.pid
    assert f"notify_pid: {child.pid}\n" in run([*BPMQ, "info", queue.name]).stdout.decode()


def test_the_proc_walk_is_one_per_call(make_queue: MakeQueue, monkeypatch: Any) -> None:
    for _ in range(3):
        make_queue(max_messages=1, max_message_size=1)
    walks = []
    real = system.queue_holders

    def counted(queues: Any) -> system.Holders:
        walks.append(len(queues))
        return real(queues)

    monkeypatch.setattr(system, "queue_holders", counted)
    listed = observe.list_queues()
    assert len(walks) == 1 and walks[0] >= 3 and len(listed) >= 3


def test_processes_that_exit_mid_walk_are_skipped_silently(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=1, max_message_size=1)
    key = (os.fstat(queue.fileno()).st_dev, os.fstat(queue.fileno()).st_ino)
    churn = [
        subprocess.Popen([sys.executable, "-c", "pass"]) for _ in range(20)
    ]  # exiting while the walks run
    for _ in range(20):
        found = system.queue_holders({key})
        assert os.getpid() not in [holder.pid for holder in found.by_queue.get(key, [])]
    for child in churn:
        child.wait()
    assert system.process(churn[0].pid) is None  # reaped: gone from /proc
    assert system.queue_notification("/nonexistent/queue") is None


def test_an_ordinary_user_counts_the_processes_it_could_not_inspect(
    make_queue: MakeQueue, holders: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """As root: uid 65534 sees neither root's holder nor its descriptors, and says so."""
    queue = make_queue(max_messages=1, max_message_size=1, mode=0o666)
    os.fchmod(queue.fileno(), 0o666)  # whatever the umask: uid 65534 may open it
    child = holders(queue.name)
    ran = run_cli_as_nobody(["ls", "--json"])
    assert ran.returncode == 0, ran
    facts = find(json.loads(ran.stdout), queue.name)
    assert facts["holders"] == [] and facts["uninspected_processes"] >= 1
    as_root = find(ls_json(), queue.name)
    assert child.pid in {holder["pid"] for holder in as_root["holders"]}
    table = run_cli_as_nobody(["ls"])
    assert b"could not be inspected" in table.stderr


def test_root_sees_another_users_holder(make_queue: MakeQueue) -> None:
    need_root("only root sees another user's descriptors")
    queue = make_queue(max_messages=1, max_message_size=1, mode=0o666)
    os.fchmod(queue.fileno(), 0o666)  # whatever the umask: uid 65534 may open it
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder, as uid 65534
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            held = MessageQueue(queue.name, create=False)
            os.write(write_end, b"r")
            time.sleep(600)
            held.close()
        finally:
            os._exit(0)
    try:
        os.close(write_end)
        assert os.read(read_end, 1) == b"r"
        facts = find(ls_json(), queue.name)
        held = next(holder for holder in facts["holders"] if holder["pid"] == pid)
        assert held["uid"] == NOBODY
    finally:
        os.close(read_end)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


# Prometheus ----------------------------------------------------------------

HOSTILE_NAMES = [
    '/quo"te',
    "/back\\slash",
    "/new\nline",
    '/forge"} 1\nposix_mqueue_messages{x="',
    "/ünï",
]


def samples(exposition: str) -> Dict[str, Dict[str, Any]]:
    """metric -> queue label -> sample, from the parsed exposition."""
    found: Dict[str, Dict[str, Any]] = {}
    for family in text_string_to_metric_families(exposition):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            found.setdefault(sample.name, {})[sample.labels["queue"]] = sample
    return found


def test_prometheus_format_parses_with_the_right_values(
    make_queue: MakeQueue, holders: Callable[..., subprocess.Popen[bytes]]
) -> None:
    tag = uuid.uuid4().hex[:8]
    made = [
        make_queue(f"{name}-{tag}", max_messages=3, max_message_size=8) for name in HOSTILE_NAMES
    ]
    made[0].put(b"a")
    made[0].put(b"b")
    private = make_queue(f"/modes-{tag}", max_messages=2, max_message_size=4, mode=0o640)
    holders(private.name)
    result = run([*BPMQ, "ls", "--format", "prometheus"])
    assert result.returncode == 0, result.stderr
    exposition = result.stdout.decode("utf-8")
    for line in exposition.splitlines():
        assert line.startswith(("# HELP posix_mqueue_", "# TYPE posix_mqueue_", "posix_mqueue_"))
    found = samples(exposition)
    assert set(found) == {
        "posix_mqueue_messages",
        "posix_mqueue_max_messages",
        "posix_mqueue_max_message_size_bytes",
        "posix_mqueue_holders",
        "posix_mqueue_info",
    }
    for queue in made:
        assert found["posix_mqueue_max_messages"][queue.name].value == 3
        assert found["posix_mqueue_max_message_size_bytes"][queue.name].value == 8
    assert found["posix_mqueue_messages"][made[0].name].value == 2
    assert found["posix_mqueue_messages"][made[1].name].value == 0
    assert found["posix_mqueue_holders"][private.name].value == 2  # the holder and this test
    info = found["posix_mqueue_info"][private.name]
    assert info.value == 1
    owner = system.user_name(os.geteuid())
    group = system.group_name(os.getegid())
    assert info.labels == {"queue": private.name, "owner": owner, "group": group, "mode": "0640"}
    assert json.loads(run([*BPMQ, "ls", "--json"]).stdout)  # --json stays a synonym
    single = samples(run([*BPMQ, "info", private.name, "--format", "prometheus"]).stdout.decode())
    assert set(single["posix_mqueue_messages"]) == {private.name}


def test_prometheus_labels_queues_of_several_users(make_queue: MakeQueue) -> None:
    """As root: a queue of uid 65534 (mode 644) beside one of root's (600)."""
    need_root("the test makes a queue as uid 65534")
    theirs = f"/nobodys-{uuid.uuid4().hex[:8]}"
    try:
        made = run_cli_as_nobody(
            ["create", theirs, "--max-messages", "2", "--max-message-size", "3", "--mode", "644"]
        )
        assert made.returncode == 0, made
        ours = make_queue(max_messages=1, max_message_size=1, mode=0o600)
        found = samples(run([*BPMQ, "ls", "--format", "prometheus"]).stdout.decode())
        nobody = system.user_name(NOBODY) or str(NOBODY)
        group = system.group_name(NOBODY) or str(NOBODY)
        assert found["posix_mqueue_info"][theirs].labels == {
            "queue": theirs,
            "owner": nobody,
            "group": group,
            "mode": "0644",
        }
        assert found["posix_mqueue_info"][ours.name].labels["owner"] == "root"
        assert found["posix_mqueue_max_messages"][theirs].value == 2
        assert found["posix_mqueue_max_message_size_bytes"][theirs].value == 3
    finally:
        unlink_quietly(theirs)


def test_a_name_that_is_not_utf8_is_labelled_as_the_cli_prints_it(make_queue: MakeQueue) -> None:
    name = os.fsdecode(b"/not-utf8-\xff-" + uuid.uuid4().hex[:8].encode())
    make_queue(name, max_messages=1, max_message_size=1)
    found = samples(run([*BPMQ, "ls", "--format", "prometheus"]).stdout.decode("utf-8"))
    assert found["posix_mqueue_max_messages"][shell_word(name)].value == 1


def test_a_queue_this_user_may_not_open_shows_only_what_can_be_known(
    make_queue: MakeQueue,
) -> None:
    """Mode 000: only root may open it; its owner sees its info and holders."""
    if os.geteuid() == 0:
        queue = make_queue(max_messages=1, max_message_size=1, mode=0o600)
        exposition = run_cli_as_nobody(["ls", "--format", "prometheus"]).stdout.decode()
    else:
        queue = make_queue(max_messages=1, max_message_size=1, mode=0o000)
        exposition = run([*BPMQ, "ls", "--format", "prometheus"]).stdout.decode()
    found = samples(exposition)
    assert found["posix_mqueue_info"][queue.name].value == 1
    assert queue.name in found["posix_mqueue_holders"]
    for metric in ("posix_mqueue_messages", "posix_mqueue_max_messages"):
        assert queue.name not in found.get(metric, {})


def test_format_options_that_disagree_are_a_usage_error(tmp_path: Path) -> None:
    for args in (
        ["ls", "--json", "--format", "table"],
        ["ls", "--format", "yaml"],
        ["ls", "--format", "json", "--textfile", str(tmp_path / "x.prom")],
    ):
        assert run([*BPMQ, *args]).returncode == 2, args


# --textfile ----------------------------------------------------------------


def test_textfile_is_written_whole_and_only_there(make_queue: MakeQueue, tmp_path: Path) -> None:
    queue = make_queue(max_messages=2, max_message_size=2)
    path = tmp_path / "mqueue.prom"
    result = run([*BPMQ, "ls", "--textfile", str(path)])
    assert result.returncode == 0 and result.stdout == b"", result.stderr
    assert samples(path.read_text())["posix_mqueue_max_messages"][queue.name].value == 2
    assert os.listdir(tmp_path) == ["mqueue.prom"]
    assert path.stat().st_mode & 0o044  # the collector, another user, may read it


def test_textfile_temporary_name_does_not_end_in_prom(tmp_path: Path, monkeypatch: Any) -> None:
    renamed = []
    real = os.rename

    def spy(source: Any, target: Any) -> None:
        renamed.append((str(source), str(target)))
        real(source, target)

    monkeypatch.setattr(os, "rename", spy)
    observe.write_textfile(str(tmp_path / "q.prom"), "# nothing\n")
    [(source, target)] = renamed
    assert os.path.dirname(source) == str(tmp_path) and not source.endswith(".prom")
    assert target == str(tmp_path / "q.prom")


@pytest.mark.parametrize("where", ["missing", "unwritable"])
def test_textfile_where_it_cannot_be_written_fails_in_one_line(tmp_path: Path, where: str) -> None:
    directory = tmp_path / "dir"
    if where == "unwritable":
        if os.geteuid() == 0:
            pytest.skip("root writes into a directory of mode 555")
        directory.mkdir(mode=0o555)
    result = run([*BPMQ, "ls", "--textfile", str(directory / "m.prom")])
    assert result.returncode == 1
    assert result.stderr.count(b"\n") == 1 and b"cannot write" in result.stderr
    if where == "unwritable":
        assert os.listdir(directory) == []


def test_textfile_must_end_in_prom(tmp_path: Path) -> None:
    result = run([*BPMQ, "ls", "--textfile", str(tmp_path / "m.txt")])
    assert result.returncode == 2 and b".prom" in result.stderr
    assert os.listdir(tmp_path) == []


def test_textfile_with_watch_is_rewritten_at_each_refresh(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    queue = make_queue(max_messages=5, max_message_size=2)
    path = tmp_path / "m.prom"
    watcher = subprocess.Popen(
        [*BPMQ, "info", queue.name, "--watch", "0.1", "--textfile", str(path)],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        queue.put(b"x")
        value = 0.0
        while value != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            value = samples(path.read_text())["posix_mqueue_messages"][queue.name].value
        assert value == 1
    finally:
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=10) == -signal.SIGINT
    assert watcher.stderr is not None and b"Traceback" not in watcher.stderr.read()
    assert os.listdir(tmp_path) == ["m.prom"]


# --watch -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
@pytest.mark.parametrize("command", [["ls"], ["info", "/some-queue"]])
def test_watch_needs_a_number_of_seconds_above_0(command: List[str], value: str) -> None:
    result = run([*BPMQ, *command, "--watch", value])
    assert result.returncode == 2 and b"--watch" in result.stderr


def read_lines(stream: Any, count: int, timeout: float = 20) -> List[str]:
    lines: List[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            line = stream.readline()
            if not line:
                break
            lines.append(line.decode())
    return lines


def test_watch_into_a_pipe_rolls_lines_with_the_change_and_a_clock(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue(max_messages=10, max_message_size=2)
    watcher = subprocess.Popen(
        [*BPMQ, "info", queue.name, "--watch", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        header, first = read_lines(watcher.stdout, 2)
        assert header.split() == ["TIME", "MESSAGES", "CHANGE", "FILL", "HOLDERS", "NAME"]
        assert first.split()[2:] == ["0", "-", "0%", "1", queue.name]  # holder: this test
        queue.put(b"a")
        queue.put(b"b")
        changes = [line.split()[3] for line in read_lines(watcher.stdout, 3)]
        assert "+2" in changes
        time.strptime(" ".join(first.split()[:2]), "%Y-%m-%d %H:%M:%S")
        # Unlinked: that refresh says so on its line, and the next ones come.
        queue.unlink()
        queue.close()
        failed = read_lines(watcher.stdout, 3)
        assert any("does not exist" in line for line in failed), failed
        assert len(failed) == 3
    finally:
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=10) == -signal.SIGINT  # a shell sees 130
    assert watcher.stderr is not None and watcher.stderr.read() == b""


def test_watch_ls_json_gives_one_object_per_refresh(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=2)
    watcher = subprocess.Popen([*BPMQ, "ls", "--watch", "0.2", "--json"], stdout=subprocess.PIPE)
    try:
        first, second = (json.loads(line) for line in read_lines(watcher.stdout, 2))
        assert find(first["queues"], queue.name)["change"] is None
        assert find(second["queues"], queue.name)["change"] == 0 and "time" in second
    finally:
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=10) == -signal.SIGINT


def test_watch_on_a_terminal_redraws_in_place(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=2)
    leader, follower = pty.openpty()
    watcher = subprocess.Popen(
        [*BPMQ, "ls", "--watch", "0.2"], stdout=follower, stderr=subprocess.DEVNULL
    )
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while seen.count(observe.CLEAR.encode()) < 2 and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.2)[0]:
                seen += os.read(leader, 65536)
    finally:
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=10) == -signal.SIGINT
        os.close(leader)
    # The first whole screen: between the first clear and the second (what
    # follows the last clear may still be coming).
    screen = seen.split(observe.CLEAR.encode())[1].decode()
    assert screen.startswith("Every 0.2s: baseplate-mq ls")
    assert "CHANGE" in screen and queue.name in screen


def test_watch_ends_74_on_a_full_device_and_141_when_the_reader_goes(
    make_queue: MakeQueue,
) -> None:
    make_queue(max_messages=1, max_message_size=1)
    if os.path.exists("/dev/full"):
        with open("/dev/full", "wb") as full:
            ended = subprocess.run(
                [*BPMQ, "ls", "--watch", "0.1"],
                stdout=full,
                capture_output=False,
                stderr=subprocess.PIPE,
                timeout=20,
            )
        assert ended.returncode == 74 and b"Traceback" not in ended.stderr
    shell = f"{shlex_join(BPMQ)} ls --watch 0.1 | head -c 1 >/dev/null; echo ${{PIPESTATUS[0]}}"
    status = subprocess.run(["bash", "-c", shell], capture_output=True, timeout=20)
    assert status.stdout.strip() == b"141" and b"Traceback" not in status.stderr


def shlex_join(args: List[str]) -> str:
    import shlex

    return shlex.join(args)


# Another IPC namespace --------------------------------------------------------


def in_new_ipc_namespace(script: str) -> subprocess.CompletedProcess[str]:
    """Run shell ``script`` in an IPC namespace (and a mount namespace) of its
    own: as root with unshare; as an ordinary user, in a user namespace too."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare")
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    command = [unshare, *user, "--ipc", "--mount", "--propagation", "private", "bash", "-c", script]
    if subprocess.run([*command[:-1], "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine cannot make an IPC and mount namespace for this user")
    env = {**os.environ, "PATH": f"{os.path.dirname(BPMQ[0])}:{os.environ['PATH']}"}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_ls_in_another_ipc_namespace_says_so_and_removes_its_probe(make_queue: MakeQueue) -> None:
    make_queue(max_messages=1, max_message_size=1)  # the mount's namespace has a queue
    bpmq = shlex_join(BPMQ)
    result = in_new_ipc_namespace(
        f"{bpmq} ls; echo status=$?; mount -t mqueue none /dev/mqueue && ls -A /dev/mqueue"
    )
    assert "status=1\n" in result.stdout, result
    assert result.stdout.startswith("status=1")  # no table, not even its header
    assert "belongs to another IPC namespace" in result.stderr
    assert "mount -t mqueue none /dev/mqueue" in result.stderr
    assert result.stdout.split("status=1\n", 1)[1] == ""  # the probe queue was removed


def test_ls_in_another_ipc_namespace_with_a_queue_of_its_own(make_queue: MakeQueue) -> None:
    make_queue(max_messages=1, max_message_size=1)
    bpmq = shlex_join(BPMQ)
    result = in_new_ipc_namespace(
        f"{bpmq} create /inside-{uuid.uuid4().hex[:6]} --max-messages 1 --max-message-size 1 "
        f">/dev/null && {bpmq} ls; echo status=$?; "
        f"mount -t mqueue none /dev/mqueue && {bpmq} ls"
    )
    before, after = result.stdout.split("status=", 1)
    assert before == "" and after.startswith("1\n"), result
    assert "belongs to another IPC namespace" in result.stderr
    assert "/inside-" in after  # once its own is mounted, ls lists it


# Advice ----------------------------------------------------------------------


@pytest.mark.parametrize("command", [["info"], ["read", "--no-create"], ["dump"]])
def test_does_not_exist_says_the_creating_process_may_not_be_running(command: List[str]) -> None:
    name = f"/missing-{uuid.uuid4().hex}"
    try:
        result = run([*BPMQ, command[0], name, *command[1:]])
        assert result.returncode == 1
        assert b"does not exist" in result.stderr and b"may not be running" in result.stderr
        assert result.stderr.count(b"\n") == 1
    finally:
        unlink_quietly(name)
