"""Build shim: setuptools needs setup() to run cffi's ``cffi_modules`` hook."""

import platform

from setuptools import setup

# cffi builds the extension against the stable ABI on CPython; tag the wheel
# so that one wheel serves every CPython 3.10+.
options = {}
if platform.python_implementation() == "CPython":
    options["bdist_wheel"] = {"py_limited_api": "cp310"}

setup(cffi_modules=["build_ffi.py:ffibuilder"], options=options)
