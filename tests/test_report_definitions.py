"""The report's section texts: complete, ordered, unique, well-formed offline HTML."""

from __future__ import annotations

import dataclasses
import html.parser
import re

import pytest

from maelens.report.definitions import REPORT_ORDER, SECTIONS, SectionText
from maelens.report.html import Section, render_report

ALLOWED_TAGS = {"p", "code", "sub", "sup", "i", "b"}


class _TagChecker(html.parser.HTMLParser):
    """Records every problem: unknown or unbalanced tags, attributes, stray '<' / '>'."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)  # entities stay apart from data
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"tag <{tag}> not allowed")
        if attrs:
            self.problems.append(f"<{tag}> has attributes {attrs}")
        self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.problems.append(f"self-closing <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if "<" in data or ">" in data:  # a bare '<' that the parser could not read as a tag
            self.problems.append(f"unescaped '<' or '>' in {data!r}")

    def handle_entityref(self, name: str) -> None:
        self.text.append("_")

    def handle_charref(self, name: str) -> None:
        self.text.append("_")

    def handle_comment(self, data: str) -> None:
        self.problems.append("comment")

    def handle_decl(self, decl: str) -> None:
        self.problems.append(f"declaration {decl!r}")


def _check(markup: str) -> _TagChecker:
    checker = _TagChecker()
    checker.feed(markup)
    checker.close()
    if checker.stack:
        checker.problems.append(f"unclosed {checker.stack}")
    return checker


def test_every_section_present_in_report_order():
    assert list(SECTIONS) == list(REPORT_ORDER)
    assert len(set(REPORT_ORDER)) == len(REPORT_ORDER) == 14
    assert all(isinstance(text, SectionText) for text in SECTIONS.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        SECTIONS["tsne"].title = "x"  # type: ignore[misc]


def test_titles_unique_and_readings_plain_one_liners():
    titles = [text.title for text in SECTIONS.values()]
    assert len(set(titles)) == len(titles)
    for sid, text in SECTIONS.items():
        assert text.title.strip() and text.reading.strip(), sid
        # html.py escapes readings: markup there would show as text
        assert not re.search(r"[<>\n]", text.title + text.reading), sid
        assert "look for" in text.reading.lower(), sid  # a reading guides, never claims


@pytest.mark.parametrize("section_id", REPORT_ORDER)
def test_definition_is_balanced_offline_html(section_id):
    definition = SECTIONS[section_id].definition_html
    checker = _check(definition)
    assert not checker.problems, (section_id, checker.problems)
    assert definition.startswith("<p>") and definition.endswith("</p>")
    lowered = definition.lower()
    assert "http" not in lowered and "www." not in lowered and "src=" not in lowered
    # '&' only as an entity: the raw text must not hold a bare ampersand
    assert not re.search(r"&(?![a-z]+;|#\d+;)", definition), section_id
    text = "".join(checker.text)
    sentences = len(re.findall(r"[.!?](?:\s|$)", text))
    assert 3 <= sentences <= 14, (section_id, sentences)


def test_checker_catches_broken_markup():
    assert _check("<p>a <b>b</p>").problems
    assert _check("<p>a</p><p>").problems
    assert _check("<p><a>x</a></p>").problems
    assert _check("<p>x < y</p>").problems or _check("<p>x < y</p>").stack
    assert not _check("<p>x &lt; y, <code>z</code><sub>1</sub></p>").problems


def test_texts_render_into_the_report(tmp_path):
    sections = [Section(sid, text.title, text.reading, text.definition_html)
                for sid, text in SECTIONS.items()]
    path = render_report(tmp_path / "report.html", "maelens", sections, {"model": "demo"})
    page = path.read_text(encoding="utf-8")
    for sid in REPORT_ORDER:
        assert f"id='def-{sid}'" in page and f"href='#def-{sid}'" in page
    assert "http" not in page.replace('http-equiv="Content-Security-Policy"', "")
