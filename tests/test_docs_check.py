"""The docs session's check for commands that typography mangled."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

DOCS = Path(__file__).resolve().parent.parent / "docs"


def load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_html", DOCS / "check_html.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_mangled_option_in_code_is_caught() -> None:
    checker = load_checker()
    page = "<pre><span>baseplate-mq read /q \u2013count</span> 3</pre>"
    problems = checker.mangled(page)
    assert problems[0] == "an en dash in code: ...baseplate-mq read /q \u2013count 3..."
    assert problems[1].startswith("a dash where an option's hyphens were")


def test_curly_quotes_in_code_and_a_dashed_option_in_prose_are_caught() -> None:
    checker = load_checker()
    assert checker.mangled("<code>printf \u2018one\u2019</code>")
    assert checker.mangled("<p>run baseplate-mq \u2013help to see</p>")


def test_clean_pages_pass_and_prose_dashes_are_fine() -> None:
    checker = load_checker()
    page = "<p>1.5 \u2013 2.5 \u00b5s, and a pause \u2014 then</p><pre>read /q --count 3</pre>"
    assert checker.mangled(page) == []


def test_the_command_fails_on_a_tree_with_a_mangled_page(tmp_path: Path) -> None:
    (tmp_path / "good.html").write_text("<pre>baseplate-mq read /q --count 3</pre>")
    (tmp_path / "bad.html").write_text("<pre>baseplate-mq read /q \u2013count 3</pre>")
    result = subprocess.run(
        [sys.executable, str(DOCS / "check_html.py"), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "bad.html: an en dash in code" in result.stderr
    (tmp_path / "bad.html").unlink()
    clean = subprocess.run(
        [sys.executable, str(DOCS / "check_html.py"), str(tmp_path)], capture_output=True
    )
    assert clean.returncode == 0
