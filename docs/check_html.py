"""Fail when typography mangled a command in the built HTML docs.

Sphinx can turn ``--count`` into an en dash and straight quotes into curly
ones; a reader who pastes such a command gets an error. This looks for those
characters inside ``<code>``, ``<pre>``, ``<kbd>`` and ``<samp>``, and for an
en or em dash directly before a letter anywhere (an option that lost its
hyphens). Usage: ``python docs/check_html.py docs/_build/html``; the docs
session runs it after every build.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import List, Optional, Tuple

#: Characters that never belong in a command, and what they are.
MANGLED = {
    "\u2013": "an en dash",
    "\u2014": "an em dash",
    "\u2018": "a curly quote",
    "\u2019": "a curly quote",
    "\u201c": "a curly quote",
    "\u201d": "a curly quote",
    "\u2212": "a minus sign",
}
CODE_TAGS = {"code", "pre", "kbd", "samp"}
DASHED_OPTION = re.compile("[\u2013\u2014][A-Za-z]")


class _TextByKind(HTMLParser):
    """Collects the text inside code elements, and all text, in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0  # how many code elements we are inside
        self.code: List[str] = []
        self.text: List[str] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        if tag in CODE_TAGS:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in CODE_TAGS and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.depth:
            self.code.append(data)


def mangled(html: str) -> List[str]:
    """What is wrong in one page: a line per problem, with the text around it."""
    parser = _TextByKind()
    parser.feed(html)
    problems = []
    code = "".join(parser.code)
    for char, what in MANGLED.items():
        for found in re.finditer(re.escape(char), code):
            snippet = code[max(0, found.start() - 30) : found.end() + 30].replace("\n", " ")
            problems.append(f"{what} in code: ...{snippet}...")
    text = "".join(parser.text)
    for found in DASHED_OPTION.finditer(text):
        snippet = text[max(0, found.start() - 30) : found.end() + 30].replace("\n", " ")
        problems.append(f"a dash where an option's hyphens were: ...{snippet}...")
    return problems


def main(argv: List[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "docs/_build/html")
    pages = sorted(root.rglob("*.html"))
    if not pages:
        print(f"no HTML pages under {root}: build the docs first", file=sys.stderr)
        return 1
    failures = 0
    for page in pages:
        for problem in mangled(page.read_text(encoding="utf-8")):
            print(f"{page.relative_to(root)}: {problem}", file=sys.stderr)
            failures += 1
    if failures:
        print(f"{failures} mangled command(s): keep commands in code, smartquotes off")
        return 1
    print(f"{len(pages)} pages checked: every command pastes as written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
