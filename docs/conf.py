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
exclude_patterns = ["_build"]
