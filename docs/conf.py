"""Sphinx configuration for baseplate-mq."""

from __future__ import annotations

import os

project = "baseplate-mq"
author = "baseplate-mq developers"
copyright = "2026, baseplate-mq developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx_click",
]

# Links go to docs.python.org; the inventory is a local copy (Debian's
# python3-doc), so that building needs no network.
intersphinx_mapping = {
    "python": (
        "https://docs.python.org/3",
        os.path.join(os.path.dirname(__file__), "_inventories", "python3.11.inv"),
    ),
}

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_type_aliases = {"MessageData": "baseplate.message_queue.MessageData"}

html_theme = "furo"
html_title = "baseplate-mq"
# Fragments that performance.rst includes are not pages of their own.
exclude_patterns = ["_build", "_bench-*.rst"]
# Commands must paste as written: no curly quotes or en dashes for "--".
smartquotes = False


def _examples_as_code(app: object, ctx: object, lines: list[str]) -> None:
    """sphinx-click shows a help text's unwrapped block (click's \\b) as a
    line block; an "Example:" block becomes a shell code block, to paste."""
    for index, line in enumerate(lines):
        if line == "| Example:":
            end = index + 1
            while end < len(lines) and lines[end].startswith("|     "):
                end += 1
            commands = ["    " + command[len("|     ") :] for command in lines[index + 1 : end]]
            lines[index:end] = ["Example:", "", ".. code-block:: shell", "", *commands, ""]
            return


def setup(app: object) -> None:
    app.connect("sphinx-click-process-description", _examples_as_code)  # type: ignore[attr-defined]
