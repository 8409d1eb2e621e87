"""The document format layer and placeholders, with a deterministic transform
in place of the model."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from jobs.formats import FORMATS, format_for, format_named
from jobs.formats.base import Segment
from jobs.placeholders import check, find, protect

DOCS = Path(__file__).parent / "fixtures" / "docs"
FIXTURES = sorted(p for p in DOCS.rglob("*") if p.is_file() and p.name != "README.md")
_KEEP = re.compile(r"⟦\d+⟧|&#?\w+;")


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def fake_translate(seg: Segment) -> str:
    """Uppercase everything but placeholders, code, URLs and entities; wrap in « »."""
    p = protect(seg.text, seg.markup)
    keep = re.compile("|".join([_KEEP.pattern] + [re.escape(x) for x in find(p.text, seg.markup)]))
    out, last = [], 0
    for m in keep.finditer(p.text):
        out += [p.text[last: m.start()].upper(), m.group(0)]
        last = m.end()
    out.append(p.text[last:].upper())
    return "«" + p.restore("".join(out)) + "»"


def translate(path: Path) -> tuple[str, str, list[Segment], list[str]]:
    text = read(path)
    doc = format_for(path).parse(text)
    ts = [fake_translate(s) for s in doc.segments]
    return text, doc.render(ts), doc.segments, ts


def verbatim(doc) -> list[str]:
    """The document's verbatim text between slots (adjacent pieces merged)."""
    out, cur = [], []
    for p in doc.parts:
        if isinstance(p, str):
            cur.append(p)
        else:
            out.append("".join(cur))
            cur = []
    out.append("".join(cur))
    return out


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: str(p.relative_to(DOCS)))
def test_identity_render_is_byte_exact(path):
    text = read(path)
    doc = format_for(path).parse(text)
    assert doc.segments, "every fixture has something to translate"
    assert doc.render() == text
    assert doc.render([s.text for s in doc.segments]) == text


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: str(p.relative_to(DOCS)))
def test_transform_changes_every_segment_and_nothing_else(path):
    text, out, segs, ts = translate(path)
    assert out != text
    for s, t in zip(segs, ts):
        assert t != s.text
        assert check(s.text, t, s.markup) == [], s.text  # the transform keeps placeholders
    if path.suffix in (".po", ".pot"):
        return  # re-parsing sees translated entries: checked in test_po_*
    # Parse the output again: the same verbatim skeleton, and the transformed text as segments.
    again = format_for(path).parse(out)
    assert verbatim(again) == verbatim(format_for(path).parse(text))
    assert len(again.segments) == len(ts)
    if path.suffix not in (".html", ".htm"):  # html: a run also holds its tags' translated titles
        assert [s.text for s in again.segments] == ts


# -- per format structure --

def test_markdown_keeps_code_urls_and_structure():
    text, out, segs, _ = translate(DOCS / "tricky.md")
    seg_text = "\n".join(s.text for s in segs)
    for code in ("pip install llamaq", "a comment that must stay English", "indented code inside the list",
                 "$ llamaq translate docs/ --to ja", 'print("Hello, world")', "layout: docs",
                 "TODO: add", "[faq]: https://example.com/faq"):
        assert code not in seg_text
        assert code in out
    # inline code, URLs, link targets untouched; their text around translated
    for kept in ("`llamaq --version`", "https://example.com/faq", '(https://example.com/api "API reference")',
                 "[FAQ][faq]", "(img/llama.png \"Reading\")", "`--to`", "`a\\|b`", "{version}", ":warning:",
                 'src="docs/logo.png"', "<kbd>Ctrl</kbd>"):
        assert kept in out, kept
    for translated in ("# «GETTING STARTED WITH `llamaq`» #", "| «TARGET LANGUAGE» |", "   - «ANOTHER NESTED ITEM»",
                       "> > «A NESTED QUOTE", 'alt="«THE LLAMAQ LOGO»"', "![A LLAMA READING A BOOK]",
                       'title: "«GETTING STARTED: THE \\"QUICK\\" WAY»"', "sidebar_label: '«START HERE»'",
                       "[^1]: «A FOOTNOTE", "> THEY CAN BE LARGE.»"):
        assert translated in out, translated
    # front-matter keys and non-text values verbatim; table delimiter row verbatim
    assert "\ndate: 2024-05-01\ntags: [guide, intro]\n" in out
    assert "|--------|:--------|--------:|" in out
    # same line count: nothing merged or split
    assert out.count("\n") == text.count("\n")


def test_markdown_real_readme_keeps_badges_and_code():
    text, out, segs, _ = translate(DOCS / "real" / "requests-README.md")
    fence = text[text.index("``` {.sourceCode .python}"): text.index("```\n\nSee")]
    assert fence in out
    for url in re.findall(r"https?://[^\s)>]+", text):
        assert url in out
    assert "-   «INTERNATIONAL DOMAINS AND URLS»" in out
    assert "«FEATURE SUPPORT»\n---------------" in out
    assert out.count("\n") == text.count("\n")


def _cues(text: str) -> list[list[str]]:
    return [b.splitlines() for b in re.split(r"\r?\n\r?\n", text.strip("\ufeff\r\n")) if b.strip()]


@pytest.mark.parametrize("name", ["tricky.srt", "real/pysrt-utf-8-excerpt.srt",
                                  "tricky.vtt", "real/webvtt-py-sample.vtt", "real/webvtt-py-cue_tags.vtt"])
def test_subtitles_same_cues_numbers_and_timings(name):
    text, out, segs, ts = translate(DOCS / name)
    a, b = _cues(text), _cues(out)
    assert len(a) == len(b)
    for ca, cb in zip(a, b):
        head = next((i for i, ln in enumerate(ca) if "-->" in ln), len(ca) - 1)
        assert cb[: head + 1] == ca[: head + 1]  # number/identifier and timing line
        assert len(cb) == len(ca)  # multi-line cue: one segment, lines kept
    assert out.startswith("\ufeff") == text.startswith("\ufeff")
    assert ("\r\n" in out) == ("\r\n" in text)
    if name == "tricky.srt":
        assert "Three lines\nin one cue\nstay one segment." in [s.text for s in segs]
        assert "♪ ♪" in out


def _po_entries(text: str) -> list[dict]:
    """A small independent .po reader: msgid/msgstr fields per entry."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        fields, key = {}, None
        for line in block.splitlines():
            m = re.match(r'^(msg\w+(?:\[\d+\])?)\s+"(.*)"$', line)
            if m:
                key = m.group(1)
                fields[key] = m.group(2)
            elif line.startswith('"') and key:
                fields[key] += line.strip()[1:-1]
        out.append({k: json.loads('"' + v + '"') for k, v in fields.items()} | {
            "#": [ln for ln in block.splitlines() if ln.startswith("#")]})
    return out


@pytest.mark.parametrize("name", ["tricky.po", "real/babel-ru_RU-messages.po"])
def test_po_msgstr_filled_everything_else_kept(name):
    text, out, segs, ts = translate(DOCS / name)
    before, after = _po_entries(text), _po_entries(out)
    assert len(before) == len(after)
    by_text = dict(zip([s.text for s in segs], ts))
    for b, a in zip(before, after):
        assert a["#"] == b["#"]  # comments, flags, references, obsolete entries
        for k in ("msgid", "msgid_plural", "msgctxt"):
            assert a.get(k) == b.get(k)
        strs = sorted(k for k in b if k.startswith("msgstr"))
        if b.get("msgid") and not any(b[k] for k in strs) and b["msgid"] in by_text:
            if "msgid_plural" in b:
                assert a["msgstr[0]"] == by_text[b["msgid"]]
                n = len([k for k in strs])
                for k in range(1, n):
                    assert a[f"msgstr[{k}]"] == by_text[b["msgid_plural"]]
            else:
                assert a["msgstr"] == by_text[b["msgid"]]
        else:
            assert {k: a[k] for k in strs} == {k: b[k] for k in strs}  # header, translated, fuzzy
    if name == "tricky.po":
        assert "%s%%" not in by_text  # no letters outside placeholders
        assert "Already translated" not in by_text and "Needs review" not in by_text
        assert 'msgstr ""\n"«THIS IS A LONG MESSAGE' in out  # multi-line layout like gettext's
    else:
        assert 'msgstr[2] "«FOOBARS»"' in out  # nplurals=3 from the header


@pytest.mark.parametrize("name", ["tricky.json", "real/react-i18next-razzle-translations.json"])
def test_json_keys_and_nesting_untouched(name):
    text, out, segs, ts = translate(DOCS / name)
    a, b = json.loads(text), json.loads(out)

    def walk(x, y):
        assert type(x) is type(y)
        if isinstance(x, dict):
            assert list(x) == list(y)
            for k in x:
                walk(x[k], y[k])
        elif isinstance(x, list):
            assert len(x) == len(y)
            for u, v in zip(x, y):
                walk(u, v)
        elif isinstance(x, str) and x in [s.text for s in segs]:
            assert y == ts[[s.text for s in segs].index(x)]
        else:
            assert x == y

    walk(a, b)
    if name == "tricky.json":
        assert '"url": "https://example.com/docs"' in out and '"number_text": "42"' in out
        assert '"version": 2,\n  "ratio": 1.5e3' in out


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.raw = [], []
        self.in_raw = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, [(k, v) for k, v in attrs if k not in ("alt", "title", "placeholder")]))
        self.in_raw += tag in ("script", "style", "pre", "textarea", "code")

    def handle_endtag(self, tag):
        self.tags.append(("/" + tag, []))
        self.in_raw -= tag in ("script", "style", "pre", "textarea", "code")

    def handle_data(self, data):
        if self.in_raw:
            self.raw.append(data)


@pytest.mark.parametrize("name", ["tricky.html", "real/mdn-creating-hyperlinks.html"])
def test_html_tags_and_raw_text_untouched(name):
    text, out, segs, ts = translate(DOCS / name)
    a, b = _Tags(), _Tags()
    a.feed(text)
    b.feed(out)
    assert a.tags == b.tags
    assert a.raw == b.raw
    if name == "tricky.html":
        assert 'alt="«A DIAGRAM OF THE QUEUE»"' in out and "title='«QUEUE DIAGRAM»'" in out
        assert 'title="«EXAMPLE SITE»">«EXAMPLE</a> LINK»' not in out
        assert '<a href="https://example.com" title="«EXAMPLE SITE»">EXAMPLE</a> LINK»' in out
        assert 'content="Not translated: only alt and title are"' in out
        assert "<!-- A comment that stays -->" in out
        assert "«TOM &amp; JERRY&nbsp;SAY &quot;HI&quot; &#x263A;»" in out


def test_text_paragraphs():
    text, out, segs, _ = translate(DOCS / "tricky.txt")
    assert [s.text for s in segs][:2] == [
        "Plain text documents are split into paragraphs.",
        "This paragraph has two lines\nand stays one segment, with a {placeholder} and %s.",
    ]
    assert "\n\n   «INDENTED PARAGRAPH WITH TRAILING SPACES.»   \n\n----\n\n" in out
    assert out.endswith("NEWLINE.»")


def test_json_invalid_is_a_clear_error():
    with pytest.raises(ValueError, match="not valid JSON"):
        format_named("json").parse('{"a": ')


def test_registry_by_suffix():
    assert format_for("a/b/README.MD").name == "md"
    assert format_for("x.pot").name == "po"
    assert format_for("x.htm").name == "html"
    assert set(FORMATS) == {"txt", "md", "srt", "vtt", "po", "json", "html"}
    with pytest.raises(ValueError, match="no translation format.*\\.docx"):
        format_for("report.docx")


# -- placeholders --

@pytest.mark.parametrize("source,bad,missing", [
    ("Hello {name}!", "Hallo Name!", "{name}"),
    ("{{count}} items", "{count} Artikel", "{{count}}"),
    ("%s of %d", "%s von", "%d"),
    ("Hi %(user)s", "Hallo %(benutzer)s", "%(user)s"),
    ("Replace $1 with $2", "Ersetze $1", "$2"),
    ("Click <b>Save</b>", "Klicke Speichern", "<b>"),
    ("Ship it :rocket:", "Versenden", ":rocket:"),
    ("Edit <1>App.js</1>", "Bearbeite App.js", "<1>"),
])
def test_check_catches_corruption(source, bad, missing):
    problems = check(source, bad)
    assert any(missing in p for p in problems), problems
    assert check(source, source) == []


def test_check_counts_repeats_and_stray_markers():
    assert check("%s and %s", "%s und") == ["missing '%s'"]
    assert check("plain", "simple ⟦3⟧") == ["stray marker(s) ⟦3⟧"]


def test_markdown_protect_hides_code_urls_and_link_targets():
    src = "Run `pip install x`, see [docs](https://d.io/x \"T\") or [ref][r] at <https://a.b> and https://c.d/e."
    p = protect(src, "md")
    for hidden in ("pip install", "https://", "[r]"):
        assert hidden not in p.text
    assert "[docs]" in p.text and "[ref]" in p.text
    assert p.restore(p.text) == src
    # a model that drops a marker is caught after restore
    broken = p.restore(p.text.replace("⟦2⟧", ""))
    assert any("https://d.io/x" in x for x in check(src, broken, "md"))
    # and one that translates inside inline code too
    assert check("Use `make all`", "Benutze `mache alles`", "md") != []


def test_html_protect_hides_code_and_attribute_tags():
    p = protect('Run <code>ls -l</code> or <a href="https://x.y">click</a> <b>now</b>', "html")
    assert p.text == "Run ⟦1⟧ or ⟦2⟧click</a> <b>now</b>"


def test_not_placeholders():
    assert find("It is 10:30:45 and 50% done, ratio 1:2:3") == []
