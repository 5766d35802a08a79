"""Benchmark harness: baseplate-mq against posix_ipc and a plain C loop.

Run ``nox -s bench`` (or ``python -m benchmarks`` in an environment with
``.[bench]`` installed). Competitors are measured in the same run, their
repetitions alternated (A B C A B C ...), and medians compared. Writes
``benchmarks/results/results-<interpreter>.{json,txt}`` and, with
``--docs``, the table and chart that ``docs/performance.rst`` shows.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from baseplate.message_queue import MessageQueue, QueueNotFoundError, unlink

try:
    import posix_ipc

    from benchmarks.legacy_module import LegacyMessageQueue
except ImportError:  # e.g. where it does not build
    posix_ipc = None

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs"
IMPLEMENTATION = platform.python_implementation()
#: Which interpreter the results are of: cpython-3.11, pypy-3.11...
TAG = f"{IMPLEMENTATION.lower()}-{sys.version_info.major}.{sys.version_info.minor}"
#: The rows ``--core`` measures: put + get, and the users' pattern.
CORE = ("in-process put+get,", "events ")


def name() -> str:
    return f"/bench-{uuid.uuid4().hex}"


# -- in-process round trips: put then get, the queue always ready -------------


def _time_round_trips(
    send: Callable[[bytes], object], receive: Callable[[], object], message: bytes, n: int
) -> float:
    """Nanoseconds per send-then-receive, the queue always ready."""
    start = time.perf_counter_ns()
    for _ in range(n):
        send(message)
        receive()
    return (time.perf_counter_ns() - start) / n


@contextlib.contextmanager
def scratch(queue: Any) -> Iterator[Any]:
    """A benchmark's queue (ours, posix_ipc's or the old module's): unlinked
    and closed afterwards, whatever happens."""
    try:
        yield queue
    finally:
        queue.unlink()
        queue.close()


def ours_inproc(size: int, n: int) -> float:
    with scratch(MessageQueue(name(), 10, 8192)) as queue:
        return _time_round_trips(queue.put, queue.get, b"x" * size, n)


def ours_batch(size: int, n: int) -> float:
    with scratch(MessageQueue(name(), 10, 8192)) as queue:
        put_many, get_many, batch = queue.put_many, queue.get_many, [b"x" * size] * 8
        start = time.perf_counter_ns()
        for _ in range(n // 8):
            put_many(batch)
            get_many(8)
        return (time.perf_counter_ns() - start) / (n // 8 * 8)


def posix_ipc_queue(queue_name: str, block: bool = True) -> Any:
    assert posix_ipc is not None
    queue = posix_ipc.MessageQueue(
        queue_name, posix_ipc.O_CREAT, max_messages=10, max_message_size=8192
    )
    queue.block = block
    return queue


def posix_ipc_inproc(size: int, n: int) -> float:
    with scratch(posix_ipc_queue(name())) as queue:
        return _time_round_trips(queue.send, queue.receive, b"x" * size, n)


def ours_get_into(size: int, n: int) -> float:
    """put() then get_into() one reused buffer: the path without a Message."""
    buffer = bytearray(8192)
    with scratch(MessageQueue(name(), 10, 8192)) as queue:
        get_into = queue.get_into
        return _time_round_trips(queue.put, lambda: get_into(buffer), b"x" * size, n)


# -- the users' event pattern: a service puts with timeout=0, a sidecar gets ----
# with timeout=0.2; in one process, 10 puts then 10 gets (the queue's depth)


def _time_events(
    send: Callable[[bytes], object], receive: Callable[[], object], message: bytes, n: int
) -> float:
    """Nanoseconds per message of 10 sends then 10 receives, repeated."""
    rounds = n // 10
    start = time.perf_counter_ns()
    for _ in range(rounds):
        for _ in range(10):
            send(message)
        for _ in range(10):
            receive()
    return (time.perf_counter_ns() - start) / (rounds * 10)


def _put_get_events(queue: Any, size: int, n: int) -> float:
    """The pattern through ``queue``'s ``put``/``get``; unlinks and closes it."""
    with scratch(queue):
        put, get = queue.put, queue.get
        return _time_events(
            lambda event: put(event, timeout=0), lambda: get(timeout=0.2), b"x" * size, n
        )


def ours_events(size: int, n: int) -> float:
    return _put_get_events(MessageQueue(name(), 10, 8192), size, n)


def posix_ipc_events(size: int, n: int) -> float:
    """posix_ipc's fastest way to never block: a non-blocking queue."""
    with scratch(posix_ipc_queue(name(), block=False)) as queue:
        return _time_events(queue.send, queue.receive, b"x" * size, n)


def legacy_events(size: int, n: int) -> float:
    return _put_get_events(LegacyMessageQueue(name(), 10, 8192), size, n)


# -- across processes: a forked producer, this process consumes -----------------


def _produce(send: Callable[..., object], message: bytes, batch: int, count: int) -> None:
    if batch > 1:
        for _ in range(count // batch):
            send([message] * batch)
    else:
        for _ in range(count):
            send(message)


def _consume(receive: Callable[..., Any], batch: int, count: int) -> None:
    if batch > 1:
        received = 0
        while received < count:
            received += len(receive(batch))
    else:
        for _ in range(count):
            receive()


def _cross(
    open_queue: Callable[[str], Any],
    sender: Callable[[Any], Callable[..., object]],
    receiver: Callable[[Any], Callable[..., Any]],
    size: int,
    n: int,
    batch: int = 1,
) -> float:
    """Nanoseconds per message from a forked producer to this process, which
    consumes: ``sender(queue)`` and ``receiver(queue)`` give the two calls."""
    queue_name = name()
    queue = open_queue(queue_name)
    message = b"x" * size
    send_one, receive_one = sender(queue), receiver(queue)
    # Run both loops here first: a forked child inherits them compiled
    # (PyPy's JIT), instead of starting every run cold.
    for _ in range(500):
        _produce(send_one, message, batch, 8)
        _consume(receive_one, batch, 8)
    total = n // batch * batch
    pid = os.fork()
    if pid == 0:
        try:
            _produce(send_one, message, batch, total)
        finally:
            os._exit(0)
    start = time.perf_counter_ns()
    _consume(receive_one, batch, total)
    elapsed = time.perf_counter_ns() - start
    os.waitpid(pid, 0)
    queue.unlink()
    queue.close()
    return elapsed / total


def _ours(queue_name: str) -> MessageQueue:
    return MessageQueue(queue_name, 10, 8192)


def ours_cross(size: int, n: int) -> float:
    return _cross(_ours, lambda q: q.put, lambda q: q.get, size, n)


def ours_cross_batch(size: int, n: int) -> float:
    return _cross(_ours, lambda q: q.put_many, lambda q: q.get_many, size, n, 8)


def posix_ipc_cross(size: int, n: int) -> float:
    return _cross(posix_ipc_queue, lambda q: q.send, lambda q: q.receive, size, n)


def _cross_events(
    open_queue: Callable[[str], Any], send: str, receive: str, size: int, n: int
) -> float:
    """The event pattern across processes: ``send(e, timeout=1)``, and
    ``receive(timeout=0.2)`` as the sidecar does."""
    return _cross(
        open_queue,
        lambda q: functools.partial(getattr(q, send), timeout=1),
        lambda q: functools.partial(getattr(q, receive), timeout=0.2),
        size,
        n,
    )


def ours_cross_events(size: int, n: int) -> float:
    return _cross_events(_ours, "put", "get", size, n)


def posix_ipc_cross_events(size: int, n: int) -> float:
    """posix_ipc with its own timeout= arguments (mq_timedsend/mq_timedreceive)."""
    return _cross_events(posix_ipc_queue, "send", "receive", size, n)


def legacy_cross_events(size: int, n: int) -> float:
    return _cross_events(lambda q: LegacyMessageQueue(q, 10, 8192), "put", "get", size, n)


# -- close() waking a blocked call ------------------------------------------------


def close_wake_latency(trials: int) -> Dict[str, float]:
    """Microseconds from close() to a thread blocked in get() raising
    QueueClosedError, and to an asyncio task blocked in get_async() in
    another thread's loop doing so: median and worst of ``trials``."""
    import asyncio
    import threading

    from baseplate.message_queue import QueueClosedError

    def one(use_asyncio: bool) -> float:
        queue = MessageQueue(name(), 10, 8192)
        woken: List[int] = []
        waiting = threading.Event()

        def blocked() -> None:
            try:
                if use_asyncio:

                    async def wait() -> None:
                        waiting.set()
                        await queue.get_async()

                    asyncio.run(wait())
                else:
                    waiting.set()
                    queue.get()
            except QueueClosedError:
                woken.append(time.perf_counter_ns())

        thread = threading.Thread(target=blocked)
        thread.start()
        waiting.wait()
        time.sleep(0.02)  # in the kernel (or the loop's selector) by now
        queue.unlink()
        start = time.perf_counter_ns()
        queue.close()
        thread.join()
        return (woken[0] - start) / 1000

    figures: Dict[str, float] = {}
    for label, use_asyncio in (("thread in get()", False), ("asyncio get_async()", True)):
        samples = [one(use_asyncio) for _ in range(trials)]
        figures[f"{label}, median"] = statistics.median(samples)
        figures[f"{label}, worst"] = max(samples)
    return figures


# -- the C loop ------------------------------------------------------------------


def c_program() -> Path:
    binary = Path(tempfile.gettempdir()) / f"bp-mqloop-{os.getuid()}"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(HERE / "mqloop.c"), "-lrt"], check=True)
    return binary


def c_loop(binary: Path, mode: str) -> Callable[[int, int], float]:
    def run(size: int, n: int) -> float:
        out = subprocess.run(
            [str(binary), mode, str(size), str(n)], capture_output=True, text=True, check=True
        )
        return float(out.stdout)

    return run


# -- the CLI pipeline ------------------------------------------------------------


def cli_pipeline(
    reader: Callable[[str], List[str]],
    writer: Callable[[str], List[str]],
    lines_file: Path,
    count: int,
    piped: bool = False,
) -> float:
    """Lines per second of `writer < file` into a concurrent `reader`, start-up
    included; the reader writes to /dev/null, or with ``piped`` into a pipe
    that `cat > /dev/null` reads."""
    queue_name = name()
    start = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        if piped:
            consumer = subprocess.Popen(reader(queue_name), stdout=subprocess.PIPE)
            cat = subprocess.Popen(["cat"], stdin=consumer.stdout, stdout=sink)
            assert consumer.stdout is not None
            consumer.stdout.close()  # cat holds the read end
        else:
            consumer = subprocess.Popen(reader(queue_name), stdout=sink)
        with lines_file.open("rb") as source:
            subprocess.run(writer(queue_name), stdin=source, check=True)
        if consumer.wait(timeout=600) != 0:
            raise RuntimeError("reader failed")
        if piped and cat.wait(timeout=600) != 0:
            raise RuntimeError("cat failed")
    elapsed = time.perf_counter() - start
    try:
        unlink(queue_name)  # without opening it: an open descriptor would keep it alive
    except QueueNotFoundError:
        pass
    return count / elapsed


def startup_seconds(command: List[str], runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- running ---------------------------------------------------------------------


def alternate(competitors: Dict[str, Callable[[], float]], repeats: int) -> Dict[str, float]:
    """Median of each competitor, runs interleaved so drift hits all alike,
    after one unmeasured warm-up run each (PyPy's JIT, caches)."""
    for run in competitors.values():
        run()
    samples: Dict[str, List[float]] = {key: [] for key in competitors}
    for _ in range(repeats):
        for key, run in competitors.items():
            samples[key].append(run())
    return {key: statistics.median(values) for key, values in samples.items()}


#: What each row's time is compared with, in its "ratio vs" columns.
BASELINES = ("posix_ipc", "C loop", "old module")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200_000, help="messages per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lines", type=int, default=300_000, help="lines in the CLI run")
    parser.add_argument("--docs", action="store_true", help="also write the docs' table and chart")
    parser.add_argument(
        "--core",
        action="store_true",
        help="measure only put + get and the users' pattern (the files are written)",
    )
    parser.add_argument(
        "--only",
        metavar="TEXT",
        help="run only the workloads whose name contains TEXT (no files are written)",
    )
    args = parser.parse_args(argv)
    n, repeats = args.n, args.repeats
    binary = c_program()
    have_posix_ipc = posix_ipc is not None
    rows: List[Dict[str, object]] = []

    def wanted(workload: str) -> bool:
        if args.core and not workload.startswith(CORE):
            return False
        return args.only is None or args.only in workload

    def record(workload: str, competitors: Dict[str, Callable[[], float]]) -> None:
        if not wanted(workload):
            return
        medians = alternate(competitors, repeats)
        row: Dict[str, object] = {"workload": workload, "unit": "ns/msg", **medians}
        for baseline in BASELINES:
            if baseline in medians and "baseplate-mq" in medians:
                row[f"ratio vs {baseline}"] = medians["baseplate-mq"] / medians[baseline]
        rows.append(row)
        print(
            workload,
            {
                k: round(v, 3) if isinstance(v, float) else v
                for k, v in row.items()
                if k not in ("workload",)
            },
            flush=True,
        )

    def versus(
        ours: Callable[[], float],
        c_mode: str,
        size: int,
        theirs: Optional[Callable[[], float]] = None,
        old_module: Optional[Callable[[], float]] = None,
    ) -> Dict[str, Callable[[], float]]:
        """The competitors of one row: ours, the C loop, and those installed."""
        competitors = {"baseplate-mq": ours, "C loop": lambda: c_loop(binary, c_mode)(size, n)}
        if have_posix_ipc and theirs is not None:
            competitors["posix_ipc"] = theirs
        if have_posix_ipc and old_module is not None:
            competitors["old module"] = old_module
        return competitors

    for size, label in ((1, "1 B"), (8192, "8 KiB")):
        record(
            f"in-process put+get, {label}",
            versus(
                functools.partial(ours_inproc, size, n),
                "inproc",
                size,
                functools.partial(posix_ipc_inproc, size, n),
            ),
        )
    if hasattr(MessageQueue, "get_into"):
        for size, label in ((1, "1 B"), (8192, "8 KiB")):
            record(
                f"in-process put+get_into, {label}",
                versus(
                    functools.partial(ours_get_into, size, n),
                    "inproc",
                    size,
                    functools.partial(posix_ipc_inproc, size, n),
                ),
            )
    record(
        "events in-process: 10 x put(e, timeout=0), 10 x get(timeout=0.2), 1 KiB",
        versus(
            lambda: ours_events(1024, n),
            "events",
            1024,
            lambda: posix_ipc_events(1024, n),
            lambda: legacy_events(1024, n),
        ),
    )
    record(
        "events cross-process: put(e, timeout=1), get(timeout=0.2), 1 KiB",
        versus(
            lambda: ours_cross_events(1024, n),
            "crosstimed",
            1024,
            lambda: posix_ipc_cross_events(1024, n),
            lambda: legacy_cross_events(1024, n),
        ),
    )
    record(
        "cross-process, 100 B, depth 10",
        versus(lambda: ours_cross(100, n), "cross", 100, lambda: posix_ipc_cross(100, n)),
    )
    record(
        "batch of 8 (put_many/get_many), in-process, 1 B",
        versus(lambda: ours_batch(1, n), "batch", 1),
    )
    record(
        "batch of 8, cross-process, 100 B",
        versus(lambda: ours_cross_batch(100, n), "cross", 100),
    )
    # The CLI pipeline, in lines per second (higher is better).
    lines_file = Path(tempfile.gettempdir()) / "bp-bench-lines.txt"
    with lines_file.open("w") as out:
        for i in range(args.lines):
            out.write(f"{i:08d} " + "x" * (12 + i % 81) + "\n")  # 20 to 100 bytes
    script = shutil.which("baseplate-mq", path=os.path.dirname(sys.executable)) or "baseplate-mq"
    count = str(args.lines)
    legacy = [sys.executable, "-m", "benchmarks.legacy_tool"]

    def our_reader(extra: List[str]) -> Callable[[str], List[str]]:
        return lambda q: [script, "read", q, "--count", count, *extra]

    for label, piped, extra in (
        ("into /dev/null", False, []),
        ("into a pipe to cat, read's default --in-flight 1", True, []),
        ("into a pipe to cat, read --in-flight 1024", True, ["--in-flight", "1024"]),
    ):
        workload = f"CLI write | read {label}, {args.lines} lines"
        if not wanted(workload):
            continue
        pipeline: Dict[str, Callable[[], float]] = {
            "baseplate-mq": functools.partial(
                cli_pipeline,
                our_reader(extra),
                lambda q: [script, "write", q],
                lines_file,
                args.lines,
                piped,
            )
        }
        if have_posix_ipc:
            pipeline["posix_ipc-era tool"] = functools.partial(
                cli_pipeline,
                lambda q: [*legacy, "--read", q, count],
                lambda q: [*legacy, "--write", q],
                lines_file,
                args.lines,
                piped,
            )
        medians = alternate(pipeline, max(3, repeats // 2))
        row: Dict[str, object] = {"workload": workload, "unit": "lines/s", **medians}
        if "posix_ipc-era tool" in medians:
            row["speed-up vs posix_ipc-era tool"] = (
                medians["baseplate-mq"] / medians["posix_ipc-era tool"]
            )
        rows.append(row)
        print(row, flush=True)
    lines_file.unlink()

    if wanted("close() wakes a blocked call"):
        rows.append(
            {"workload": "close() wakes a blocked call", "unit": "us", **close_wake_latency(50)}
        )
        print(rows[-1], flush=True)
    if args.only is not None:
        return  # a partial run writes no files

    if not args.core:
        rows.append(_startup_row(script))
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "python": sys.version.split()[0],
        "implementation": IMPLEMENTATION,
        "messages per run": n,
        "repeats": repeats,
        "posix_ipc": have_posix_ipc,
    }
    (RESULTS / f"results-{TAG}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = render_table(rows, meta)
    (RESULTS / f"results-{TAG}.txt").write_text(table)
    print(table)
    if args.docs:
        render_docs()


def _startup_row(script: str) -> Dict[str, object]:
    """The wall time of ``baseplate-mq --help`` against the bare interpreter's."""
    help_time = startup_seconds([script, "--help"])
    bare_time = startup_seconds([sys.executable, "-c", "pass"])
    row: Dict[str, object] = {
        "workload": "baseplate-mq --help (wall time)",
        "unit": "ms",
        "baseplate-mq": help_time * 1000,
        "python -c pass": bare_time * 1000,
    }
    print(row, flush=True)
    return row


def render_docs() -> None:
    """The docs' table and chart for every interpreter measured so far (the
    PyPy run needs no matplotlib: its JSON is rendered by the CPython run)."""
    for path in sorted(RESULTS.glob("results-*.json")):
        tag = path.stem.removeprefix("results-")
        saved = json.loads(path.read_text())
        (DOCS / f"_bench-{tag}.rst").write_text(render_rst(saved["rows"], saved["meta"]))
        chart(saved["rows"], DOCS / "_static" / f"bench-{tag}.png", saved["meta"])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def _columns(rows: List[Dict[str, object]]) -> List[str]:
    columns: List[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def render_table(rows: List[Dict[str, object]], meta: Dict[str, object]) -> str:
    columns = _columns(rows)
    lines = [
        f"{meta['implementation']} {meta['python']}, medians of {meta['repeats']} "
        f"alternated runs, {meta['messages per run']} messages each"
    ]
    for row in rows:
        lines.append("  " + "; ".join(f"{k}: {_cell(row[k])}" for k in columns if k in row))
    return "\n".join(lines) + "\n"


#: How render_rst groups the rows, by unit, each group a table of its own.
TABLES = (
    ("ns/msg", "nanoseconds per message (lower is better)"),
    ("lines/s", "CLI lines per second, start-up included (higher is better)"),
    ("us", "microseconds from close() to the woken call raising QueueClosedError"),
    ("ms", "milliseconds of wall time"),
)


def render_rst(rows: List[Dict[str, object]], meta: Dict[str, object]) -> str:
    """The docs' tables: one per unit, each with only the columns its rows use."""
    out: List[str] = []
    for unit, title in TABLES:
        group = [row for row in rows if row["unit"] == unit]
        if not group:
            continue
        columns = [column for column in _columns(group) if column != "unit"]
        out += [
            f".. list-table:: {meta['implementation']} {meta['python']}: {title}; medians "
            f"of {meta['repeats']} alternated runs",
            "   :header-rows: 1",
            "",
            "   * - " + "\n     - ".join(columns),
        ]
        for row in group:
            cells = [f" {_cell(row[column])}" if column in row else "" for column in columns]
            out.append("   * -" + "\n     -".join(cells))
        out.append("")
    return "\n".join(out)


#: What the chart sets side by side for each workload, and in which colour.
COMPETITORS = (
    ("baseplate-mq", "tab:blue"),
    ("posix_ipc", "tab:orange"),
    ("C loop", "tab:green"),
    ("old module", "tab:gray"),
)


def chart(rows: List[Dict[str, object]], path: Path, meta: Dict[str, object]) -> None:
    """Time per message of ours, posix_ipc, the C loop (and the old module)
    side by side, for each workload measured in nanoseconds per message."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [row for row in rows if row["unit"] == "ns/msg"]
    height = 0.8 / len(COMPETITORS)
    fig, ax = plt.subplots(figsize=(10, 0.9 * len(timed) + 1.6))
    for rank, (name, colour) in enumerate(COMPETITORS):
        places = [i + rank * height for i, row in enumerate(timed) if name in row]
        values = [float(row[name]) for row in timed if name in row]  # type: ignore[arg-type]
        ax.barh(places, values, height=height, color=colour, label=name)
    ax.set_yticks(
        [i + 0.4 - height / 2 for i in range(len(timed))],
        [str(row["workload"]).replace(": ", ":\n", 1) for row in timed],
        fontsize=8,
    )
    ax.invert_yaxis()
    ax.set_xlabel("nanoseconds per message (lower is better)")
    ax.set_title(f"baseplate-mq on {meta['implementation']} {meta['python']}")
    # Beside the bars, not over them.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    # The code that drew it, by digest: a test fails once the code is newer.
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Drawn-by": chart_digest()})


def chart_digest() -> str:
    """A digest of the code that draws the charts (:func:`chart` and its colours)."""
    code = inspect.getsource(chart) + repr(COMPETITORS)
    return hashlib.sha256(code.encode()).hexdigest()[:16]


if __name__ == "__main__":
    main()
