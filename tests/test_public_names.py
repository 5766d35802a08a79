"""The package's three lists of public names agree: ``_HOMES`` (where each loads
from), ``__all__`` (what ``import *`` and the documentation take) and the
TYPE_CHECKING imports (what type checkers see). They are not equal on purpose:
``_HOMES`` also holds ``RLIMIT_MSGQUEUE`` (public, left out of ``import *``)
and ``_rebuild_message`` (named by pickles of 1.0.0), which type checkers
need not see.
"""

from __future__ import annotations

import ast
import importlib

import baseplate.message_queue as mq
from helpers import ROOT

# Public, but not in __all__; and loadable for pickles only.
NOT_IN_ALL = {"RLIMIT_MSGQUEUE", "_rebuild_message"}
NOT_TYPE_CHECKED = {"_rebuild_message"}


def _type_checking_imports() -> dict[str, str]:
    """Name -> home module of each import under ``if TYPE_CHECKING:`` in __init__.py."""
    tree = ast.parse((ROOT / "src/baseplate/message_queue/__init__.py").read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom), ast.dump(statement)
                assert statement.module is not None
                for alias in statement.names:
                    assert alias.asname == alias.name, "re-export as itself"
                    found[alias.name] = statement.module.rsplit(".", 1)[-1]
    return found


def test_all_is_homes_but_the_names_kept_out_of_it() -> None:
    assert set(mq.__all__) == set(mq._HOMES) - NOT_IN_ALL
    assert sorted(mq.__all__) == sorted(set(mq.__all__)), "no duplicates"


def test_type_checkers_see_every_home_at_its_home() -> None:
    imports = _type_checking_imports()
    assert set(imports) == set(mq._HOMES) - NOT_TYPE_CHECKED
    assert imports == {name: mq._HOMES[name] for name in imports}


def test_every_home_defines_its_names() -> None:
    for name, home in mq._HOMES.items():
        module = importlib.import_module(f"baseplate.message_queue.{home}")
        assert getattr(mq, name) is getattr(module, name)
