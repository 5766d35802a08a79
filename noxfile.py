"""Sessions: ``nox`` runs the default set (every test, lint, types, docs, sanitizers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs", "doctest", "sanitize"]
nox.options.error_on_missing_interpreters = True

PYTHONS = ["3.11", "pypy3"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite against the installed package, on CPython and PyPy."""
    session.install(".[test]")
    session.run("pytest", *session.posargs)


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
    session.run("mypy", "--strict", "-p", "baseplate")
    session.run(
        "mypy",
        "--strict",
        "tests",
        "benchmarks",
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
    """The C helpers under AddressSanitizer and UndefinedBehaviorSanitizer (and
    -Werror): the whole test suite, then a short stress run. Any report fails."""
    # Built from a copy: setuptools would leave the instrumented objects in
    # ./build for the next session's install to pick up.
    source = Path(session.create_tmp()) / "source"
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
    logs = Path(session.create_tmp()) / "sanitizer-reports"
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
            "tests/test_reliability.py::test_memory_is_stable_over_many_round_trips",
            *session.posargs,
            env=env,
        )
        session.run("python", "tests/stress.py", "--messages", "200000", env=env)
    finally:
        reports = sorted(logs.iterdir())
        for report in reports:
            session.log(f"{report.name}:\n{report.read_text()}")
    if reports:
        session.error(f"the sanitizers reported {len(reports)} problem(s), shown above")


@nox.session(python=PYTHONS)
def stress(session: nox.Session) -> None:
    """Millions of messages through faults; reports messages/s and losses."""
    session.install(".[test]")
    session.run("python", "tests/stress.py", *session.posargs)


@nox.session(python=PYTHONS)
def bench(session: nox.Session) -> None:
    """The benchmark harness against posix_ipc and a C loop (writes benchmarks/results)."""
    session.install(".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs, env={"PYTHONPATH": "."})
