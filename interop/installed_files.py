"""Is every file of baseplate.py as it was installed? (``nox -s baseplate_py``)

``python interop/installed_files.py beside``: with both installed, no file
belongs to both distributions, and each of baseplate.py's files still has
the content its RECORD names (so installing ours overwrote none of them).
``python interop/installed_files.py alone``: after ours is uninstalled, each of
baseplate.py's files is still there, unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from importlib import metadata
from typing import Set


def files_of(distribution: str) -> Set[str]:
    """The paths a distribution installed, as its RECORD names them."""
    return {str(path) for path in metadata.distribution(distribution).files or []}


def damaged(distribution: str) -> list[str]:
    """The files of ``distribution`` that are gone or differ from its RECORD."""
    found = []
    for path in metadata.distribution(distribution).files or []:
        if path.hash is None:  # RECORD itself, and compiled files
            continue
        try:
            content = path.read_binary()
        except FileNotFoundError:
            found.append(f"{path}: gone")
            continue
        digest = base64.urlsafe_b64encode(hashlib.new(path.hash.mode, content).digest())
        if digest.rstrip(b"=").decode() != path.hash.value:
            found.append(f"{path}: changed")
    return found


def main() -> None:
    (when,) = sys.argv[1:]
    theirs = files_of("baseplate")
    problems = damaged("baseplate")
    if when == "beside":
        ours = files_of("baseplate-mq")
        problems += [f"{path}: installed by both" for path in sorted(theirs & ours)]
        outside = sorted(p for p in ours if p.startswith("baseplate/") and "/" not in p[10:])
        problems += [f"{path}: ours, at the namespace's root" for path in outside]
    print(f"baseplate.py: {len(theirs)} files; {when}: {len(problems)} problem(s)")
    for problem in problems:
        print(f"  {problem}")
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
