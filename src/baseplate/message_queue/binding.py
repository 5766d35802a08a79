"""The binding: the one import of the compiled module, ``_mqueue``, and the
handshake that makes sure it was built from the C surface this code expects.

``build_ffi.py`` bakes the hash of the C surface (the cdef and ``csrc/``)
into the module; ``_surface.py`` holds the hash the Python code was written
against. A module built from an older (or newer) surface, such as a stale
``python build_ffi.py`` build left in ``src/``, would misbehave in ways no
test predicts: it is refused here, at import, with :class:`ImportError`
saying how to rebuild. Every module that calls into C imports ``ffi`` and
``lib`` from here. It touches nothing but the module's constant.
"""

from __future__ import annotations

import sys

from baseplate.message_queue._mqueue import ffi, lib

from baseplate.message_queue._surface import SURFACE_HASH

__all__ = ["check_surface", "ffi", "lib"]

REBUILD = (
    "rebuild it: `pip install .` (or `pip install --force-reinstall --no-deps .`) from "
    "the source tree, or `python build_ffi.py` for an in-place build into src/"
)


def check_surface(baked: object, expected: str, where: str) -> None:
    """Raise :class:`ImportError` unless the module at ``where`` was built from
    the surface ``expected`` (``baked``: its hash, or None if it has none)."""
    if baked == expected:
        return
    built = "before the handshake existed" if baked is None else f"from C surface {baked}"
    raise ImportError(
        f"the compiled binding {where} does not match this version of "
        f"baseplate.message_queue: it was built {built}, and this code expects C surface "
        f"{expected}. A stale build is being picked up; {REBUILD}"
    )


def _baked() -> object:
    """The hash baked into the loaded module, or None if it has none."""
    try:
        pointer = lib.bp_surface_hash
    except AttributeError:
        return None
    return ffi.string(pointer).decode("ascii")


check_surface(
    _baked(),
    SURFACE_HASH,
    str(getattr(sys.modules[f"{__package__}._mqueue"], "__file__", "_mqueue")),
)
