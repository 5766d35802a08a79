"""Sessions: ``nox`` runs the default set (every test, lint, types, docs)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs", "doctest"]
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
    session.run("mypy", "--strict", "tests", "benchmarks", "build_ffi.py", "noxfile.py")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The HTML documentation; any warning is an error."""
    session.install(".[docs]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session(python="3.11")
def doctest(session: nox.Session) -> None:
    """Run the documentation's examples (the seed page's producer and consumer)."""
    session.install(".[docs]")
    session.run("sphinx-build", "-W", "-b", "doctest", "docs", "docs/_build/doctest")


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
