"""The format layer against a hostile translator: translations full of what
each file syntax gives a meaning to (newlines, pipes, block markers, fences,
"-->", quotes, backslashes, "<" and "&"), on every fixture of every format.

Whatever the translations, the output keeps the source's skeleton (the
format's own structure check), and a segment whose translation could not be
written keeps its source and is reported. Where a format promises to escape a
character, a translation containing it is written, not rejected."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.formats import format_for, format_named
from jobs.formats.base import UnsafeTranslation
from jobs.formats.po import unquote
from jobs.placeholders import find
from jobs.translation.documents import write_atomic

DOCS = Path(__file__).parent / "fixtures" / "docs"
FIXTURES = sorted(p for p in DOCS.rglob("*") if p.is_file() and p.name != "README.md")
IDS = [str(p.relative_to(DOCS)) for p in FIXTURES]
SETTINGS = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ANYTHING = ["\n", "\n\n", "|", "# ", "- ", "> ", "```", "~~~", "-->", '"', "'", "\\", "<", "&", "1. ", "===",
            "---", "+ ", "<b>", "`", "*", "$", "[", "]", ": ", "\n    ", "\r\n", "{", "}", "%s", "#"]
# Written as they are wherever a word boundary is, per the segment's markup.
BENIGN = {
    "md": ["\n", "\n\n", " | ", "\n# ", "# ", "\n- ", "- ", "\n> ", "> ", "\n```\n", "\n1. ", "1) ", "\n===\n",
           "\n---\n", "\n+ ", ' " ', " ' ", " & ", " < ", " --> ", "\n: ", "\n~ "],
    "html": ["\n", "\n\n", " | ", "# ", "- ", "> ", "```", "-->", '"', "'", "\\", "<", "&", "<zz>", "</p>",
             "<!--", "&amp", "\n```\n"],
    "text": ["\n", "\n\n", "|", "# ", "- ", "> ", "```", "-->", '"', "'", "\\", "<", "&", "\t", "\n-->\n",
             "#", "{", "%"],
}


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def gaps(text: str, markup: str) -> list[int]:
    """Word boundaries outside placeholders (code, URLs, tags, link targets)
    and inline math."""
    covered = set()
    pos = 0
    for ph in find(text, markup):
        at = text.find(ph, pos)
        covered.update(range(at, at + len(ph) + 1))
        pos = at + len(ph)
    if markup == "md":
        for m in re.finditer(r"\$[^$\s][^$]*\$", text):
            covered.update(range(m.start(), m.end()))
    return [0, len(text)] + [i for i, c in enumerate(text) if c == " " and i not in covered]


def insert(text: str, edits: list[tuple[int, str]]) -> str:
    for at, piece in sorted(edits, reverse=True):
        text = text[:at] + piece + text[at:]
    return text


@st.composite
def anything(draw, text: str) -> str:
    """The source with up to 4 hostile pieces anywhere, or a hostile piece alone."""
    if draw(st.integers(0, 9)) == 0:
        return "".join(draw(st.lists(st.sampled_from(ANYTHING), min_size=1, max_size=3)))
    edits = draw(st.lists(st.tuples(st.integers(0, len(text)), st.sampled_from(ANYTHING)), max_size=4))
    return insert(text, edits)


@st.composite
def benign(draw, text: str, markup: str, srt: bool = False) -> str:
    where = gaps(text, markup)
    pieces = [p for p in BENIGN[markup] if not (srt and "<" in p)]  # SRT has no escapes: "<b" + ">" is a tag
    edits = draw(st.lists(st.tuples(st.sampled_from(where), st.sampled_from(pieces)), min_size=1, max_size=4))
    return insert(text, [(at, " " + piece) for at, piece in edits])  # a word of its own


def parsed(path: Path):
    text = read(path)
    fmt = format_for(path)
    return text, fmt, fmt.parse(text)


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_hostile_translation_keeps_the_skeleton_or_the_source(path):
    text, fmt, doc = parsed(path)
    want = fmt.skeleton(text)

    @SETTINGS
    @given(st.tuples(*(anything(s.text) for s in doc.segments)))
    def run(ts):
        r = fmt.render(doc, list(ts))
        assert fmt.skeleton(r.text) == want
        assert set(r.rejected) <= {i for i, t in enumerate(ts) if t != doc.segments[i].text}
        kept = [s.text if i in r.rejected else t for i, (s, t) in enumerate(zip(doc.segments, ts))]
        assert doc.render(kept) == r.text  # rejected segments: exactly their source

    run()


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_every_format_escapes_what_it_must(path):
    """Hostile characters at word boundaries are escaped and written; only SRT
    cannot write "-->" and keeps those cues' source."""
    text, fmt, doc = parsed(path)
    want = fmt.skeleton(text)

    @SETTINGS
    @given(st.tuples(*(benign(s.text, s.markup, fmt.name == "srt") for s in doc.segments)))
    def run(ts):
        ts = [t + f" Zq{i}x" for i, t in enumerate(ts)]
        r = fmt.render(doc, ts)
        assert fmt.skeleton(r.text) == want
        must_reject = {i for i, t in enumerate(ts) if fmt.name == "srt" and "-->" in t}
        assert set(r.rejected) == must_reject, {i: (ts[i], why) for i, why in r.rejected.items()}
        for i in range(len(ts)):
            assert (f"Zq{i}x" in r.text) == (i not in must_reject)

    run()


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_identity_round_trip_is_byte_exact(path):
    text, fmt, doc = parsed(path)
    assert doc.render() == text
    r = fmt.render(doc, [s.text for s in doc.segments])
    assert r.text == text and r.rejected == {}


def test_fixtures_cover_every_format_and_crlf():
    names = {format_for(p).name for p in FIXTURES}
    assert names == {"md", "html", "po", "srt", "vtt", "json", "txt"}
    assert any(b"\r\n" in p.read_bytes() and p.suffix == ".md" for p in FIXTURES)


# -- Markdown: what the encoders do --

MD = format_named("md")


def render_one(text: str, old: str, new: str, fmt=MD):
    doc = fmt.parse(text)
    ts = [new if s.text == old else s.text for s in doc.segments]
    assert ts != [s.text for s in doc.segments], f"no segment {old!r}"
    return fmt.render(doc, ts)


def test_markdown_block_starters_in_a_translation_stay_text():
    src = "Intro paragraph.\n\nSecond one.\n"
    r = render_one(src, "Intro paragraph.", "# Titre\n- liste\n> citation\n```\n1. un\n===\n\n<div>\n[x]: /y")
    assert r.rejected == {}
    assert MD.skeleton(r.text) == MD.skeleton(src)
    assert r.text.startswith("\\# Titre\n")
    assert "\n\\- liste\n\\> citation\n" in r.text and "1\\. un" in r.text
    assert "\n\n\n" not in r.text and r.text.count("\n\n") == 1  # no paragraph ended early


def test_markdown_lines_added_inside_nested_containers_get_the_prefix():
    text = read(DOCS / "guide.md")
    r = render_one(text, "inner item in a quote in a list\nthat wraps to a second line",
                   "premier\n- deuxième\ntroisième")
    assert r.rejected == {}
    assert "  > - premier\n  >   \\- deuxième\n  >   troisième\n  > - second inner item" in r.text
    assert MD.skeleton(r.text) == MD.skeleton(text)


def test_markdown_table_cells_escape_pipes_and_newlines():
    text = read(DOCS / "guide.md")
    r = render_one(text, "A CSV of terms that stay the same", "a | b\nc")
    assert r.rejected == {}
    assert "| `--glossary` | a \\| b c | `--glossary terms.csv` |" in r.text
    assert MD.skeleton(r.text) == MD.skeleton(text)


def test_markdown_heading_closing_hashes_and_setext_underlines():
    r = render_one("# Title #\n\nPara\n===\n", "Title", "Titre en C #")
    assert "# Titre en C \\# #" in r.text and r.rejected == {}
    r = render_one("# Title #\n\nPara\n===\n", "Para", "Un\n---\ndeux")
    assert r.rejected == {} and MD.skeleton(r.text) == MD.skeleton("# Title #\n\nPara\n===\n")


def test_markdown_verbatim_blocks_and_segments():
    segs = {s.text: s for s in MD.parse(read(DOCS / "guide.md")).segments}
    text = "\n".join(segs)
    for verbatim in ("\\int_0^1", "weight: 3", "https://example.com/tables", "[ ]", "[x]", "[^src]:"):
        assert verbatim not in text, verbatim
    assert segs["Term one"].note == "term"
    assert "The first definition, which is prose." in segs
    assert "A longer note\nthat continues on an indented line." in segs  # footnote continuation
    assert "Hello {name}, welcome to **llamaq**! Read the [docs](https://example.com/docs) first.\n" \
           "This paragraph ends in a code span: `llamaq run`" in segs
    assert "Click to expand" in segs and segs["Click to expand"].markup == "html"
    faq = [s.text for s in MD.parse(read(DOCS / "faq.md")).segments]
    assert faq[1] == ("**How do I install llamaq?**\nRun `pip install llamaq` and check the version with "
                      "`llamaq --version`.")
    assert "<mailto:bugs@example.com>" in faq[3]


def test_markdown_hard_breaks_are_visible_in_segments_and_kept():
    text = read(DOCS / "guide.md")
    seg = "Line with a hard break\\\nand the next line.\\\nAnd a trailing-space break."
    assert seg in [s.text for s in MD.parse(text).segments]
    r = render_one(text, seg, "Ligne\\\nsuivante.\\\nEt la fin.")
    assert r.rejected == {} and "Ligne\\\nsuivante.\\\nEt la fin.\n" in r.text
    r = render_one(text, seg, "Une seule ligne.")  # a lost hard break changes the structure
    assert list(r.rejected.values()) == ["translation changes the document structure"]


def test_markdown_crlf_file_stays_crlf():
    text = read(DOCS / "release-notes-crlf.md")
    r = render_one(text, "Added the `{count}` placeholder to <code>llamaq stats</code>.\nIt counts jobs per queue.",
                   "Ajout de `{count}` à <code>llamaq stats</code>.\nCompte les tâches\n- par file.")
    assert r.rejected == {}
    assert "\n" not in r.text.replace("\r\n", "")
    assert "  Compte les tâches\r\n  \\- par file.\r\n" in r.text


def test_markdown_long_lists_quotes_and_tables_are_checked_piece_by_piece():
    """A long list, quote or table is checked a few items (a row) at
    a time: every segment is still found and every hostile line escaped."""
    text = ("| Name | Meaning |\n|---|---|\n" + "".join(f"| `o{i}` | Option {i} |\n" for i in range(40))
            + "\n" + "".join(f"- Item {i}\n  wraps\n" for i in range(40))
            + "\n" + "".join(f"> Quoted {i}.\n>\n" for i in range(40)) + "\nTerm\n: Definition.\n")
    doc = MD.parse(text)
    assert len(doc.segments) == 2 + 40 + 40 + 40 + 2
    ts = [s.text + " | x\n- y\n> z\n: w\n---" for s in doc.segments]
    r = MD.render(doc, ts)
    assert r.rejected == {}
    assert MD.skeleton(r.text) == MD.skeleton(text)
    assert "| Option 39 \\| x \\- y \\> z \\: w \\--- |" in r.text


def test_markdown_byte_order_mark_before_a_heading():
    text = "\ufeff# Title\n\nPara\n"
    doc = MD.parse(text)
    assert [(s.text, s.note) for s in doc.segments] == [("Title", "heading"), ("Para", "paragraph")]
    r = MD.render(doc, ["Titre\nlong", "- Para"])
    assert r.text == "\ufeff# Titre long\n\n\\- Para\n" and r.rejected == {}


def front_matter(text: str) -> dict:
    import yaml

    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.parametrize("t", ["Guide : démarrer", "- liste", "Titre # un", "@accueil", 'Dis "oui"', "a\nb"])
def test_front_matter_multiline_plain_value_stays_valid_yaml(t):
    """A plain value wrapped over indented lines is one segment: its translation
    replaces every line (a quoted first line before a continuation is a YAML error)."""
    src = "---\ntitle: Start\ndescription: A long description\n  that wraps to a second line\nweight: 3\n---\n\nBody.\n"
    doc = MD.parse(src)
    assert "A long description\nthat wraps to a second line" in [s.text for s in doc.segments]
    r = MD.render(doc, [t if s.note == "front matter" else s.text for s in doc.segments])
    assert r.rejected == {}
    assert front_matter(r.text) == {"title": t.replace("\n", " "), "description": t.replace("\n", " "), "weight": 3}


@pytest.mark.parametrize("t", ["yes", "No", "null", "~", "1.5", "42", "true"])
def test_front_matter_translation_stays_a_string(t):
    src = "---\ntitle: Start here\n---\n\nBody.\n"
    r = render_one(src, "Start here", t)
    assert front_matter(r.text) == {"title": t}


def test_front_matter_comment_is_not_translated():
    src = "---\ntitle: Hello world # the main title\nsummary: 'Short one' # shown in lists\n---\n\nBody.\n"
    doc = MD.parse(src)
    assert [s.text for s in doc.segments][:2] == ["Hello world", "Short one"]
    r = MD.render(doc, ["Bonjour : monde", "Court, l'un", "Corps."])
    assert r.text.startswith("---\ntitle: \"Bonjour : monde\" # the main title\nsummary: 'Court, l''un' # shown in lists\n")
    assert front_matter(r.text) == {"title": "Bonjour : monde", "summary": "Court, l'un"}


def test_front_matter_quoted_value_over_lines_is_kept():
    src = '---\ntitle: "A quoted title\n  on two lines"\n---\n\nBody.\n'
    assert [s.text for s in MD.parse(src).segments] == ["Body."]

def test_myst_target_lines_are_not_prose():
    text = "(compatibility-requirements)=\n\n## Compatibility\n\nSee {ref}`compatibility-requirements`.\n"
    assert [s.text for s in MD.parse(text).segments] == ["Compatibility", "See {ref}`compatibility-requirements`."]



def test_markdown_skeleton_ignores_soft_breaks_only():
    sk = MD.skeleton
    assert sk("Some *text* here\nand there.\n") == sk("Other *words*\nin\nthree lines.\n")
    assert sk("Some *text*.\n") != sk("Some text.\n")
    assert sk("a\\\nb\n") != sk("a\nb\n")  # a hard break is structure
    assert sk("[x](https://a.example)\n") != sk("[x](https://b.example)\n")
    assert sk("<https://a.example>\n") != sk("[https://a.example](https://a.example)\n")
    assert sk("Para\n") != sk("# Para\n")
    assert sk("`code`\n") != sk("`kode`\n")


def test_html_text_and_attributes_escape_markup():
    html = format_named("html")
    src = '<p title="Hello">Say <b>hi</b> &amp; wave</p>\n'
    doc = html.parse(src)
    assert [s.text for s in doc.segments] == ["Hello", "Say <b>hi</b> &amp; wave"]
    r = html.render(doc, ['Bon"jour <&>', 'Dis <b>salut</b> & <i>agite</i> <script>'])
    assert r.rejected == {}
    assert r.text == '<p title="Bon&quot;jour &lt;&amp;&gt;">Dis <b>salut</b> &amp; &lt;i>agite&lt;/i> &lt;script></p>\n'
    assert html.skeleton(r.text) == html.skeleton(src)


def test_subtitles_override_codes_stay_out_of_segments():
    srt = format_named("srt")
    text = read(DOCS / "overrides.srt")
    doc = srt.parse(text)
    assert all(not s.text.startswith("{\\") for s in doc.segments)
    out = doc.render(["En haut.", "Italique{\\i0} et normal.", "<font color=\"#ffff00\">Mots</font>\n\njaunes"])
    assert "{\\an8}En haut.\n" in out and "{\\i1}Italique{\\i0}" in out
    assert srt.skeleton(out) == srt.skeleton(text)


def test_srt_cannot_write_an_arrow_vtt_escapes_it():
    srt, vtt = format_named("srt"), format_named("vtt")
    doc = srt.parse(read(DOCS / "tricky.srt"))
    with pytest.raises(UnsafeTranslation, match="-->"):
        doc.render(["a --> b"] * len(doc.segments))
    r = srt.render(doc, ["a\n-->\nb"] + [s.text for s in doc.segments[1:]])
    assert list(r.rejected) == [0] and r.text == read(DOCS / "tricky.srt")
    doc = vtt.parse(read(DOCS / "tricky.vtt"))
    r = vtt.render(doc, [s.text + " --> b" for s in doc.segments])
    assert r.rejected == {} and r.text.count(" --&gt; b") == len(doc.segments)


def test_po_quotes_backslashes_quotes_and_newlines():
    po = format_named("po")
    text = read(DOCS / "tricky.po")
    doc = po.parse(text)
    t = 'Un "mot" \\ avec\nune ligne\tet\x07 fin'
    r = po.render(doc, [t] * len(doc.segments))
    assert r.rejected == {}
    assert po.skeleton(r.text) == po.skeleton(text)
    entry = r.text[r.text.index('msgid "Welcome back'):].split("\n\n")[0]
    lines = entry.splitlines()[1:]
    assert unquote("".join(ln.split(" ", 1)[1] if ln.startswith("msgstr") else ln for ln in lines)
                   .replace('""', "")) == t


def test_json_strings_escaped():
    fmt = format_named("json")
    text = read(DOCS / "tricky.json")
    doc = fmt.parse(text)
    ts = [f'"{i}" \\ </script>\n\u2028' for i in range(len(doc.segments))]
    r = fmt.render(doc, ts)
    assert r.rejected == {}
    out = json.loads(r.text)
    assert json.dumps(out).count("</script>") == len(ts)


def test_pipeline_reports_an_unwritable_translation_and_keeps_the_source(tmp_path):
    """A translation the format cannot write is a failed segment: reported, source kept."""
    from dataclasses import replace

    from test_translation import Upper

    from jobs.translation import FileJob, Translator, translate_documents

    class Arrows(Upper):  # every translation gains a timing arrow
        def run(self, jobs):
            for i, c in super().run(jobs):
                yield i, replace(c, text=c.text + " -->")

    text = read(DOCS / "tricky.srt")
    vtt_text = "WEBVTT\n\n00:00.000 --> 00:01.000\nHello there.\n\n00:01.000 --> 00:02.000\nSecond cue.\n"
    jobs = [FileJob("tricky.srt", text, format_named("srt")), FileJob("t.vtt", vtt_text, format_named("vtt"))]
    srt, vtt = translate_documents(jobs, Translator(Arrows(), tgt="fr"))
    assert srt.text == text
    assert len(srt.failed) == srt.segments == 3
    unsafe = [f for f in srt.failed if "<" not in f["segment"]]  # Upper also breaks <i> tags
    assert len(unsafe) == 2 and all("-->" in f["problems"][0] for f in unsafe), srt.failed
    assert vtt.failed == [] and "\nHELLO THERE. --&gt;\n" in vtt.text and vtt.text.count(" --&gt;") == 2



def test_collapsed_and_shortcut_reference_links_can_be_translated():
    """`[text][]` and `[text]` take their label from their text: a segment shows
    them as `[text][text]`, so a translated link text keeps the target."""
    import re
    from dataclasses import replace

    from test_translation import Upper

    from jobs.translation import FileJob, Translator, translate_documents

    class Words(Upper):  # every word of 3+ letters becomes another one; markers kept
        def run(self, jobs):
            for i, c in super().run(jobs):
                out = re.sub(r"(?<![⟦\w])([A-Za-z]{3,})", lambda m: "zz" + m.group(1).lower(), self.seen[-1])
                yield i, replace(c, text=out)

    text = ("Read the [Code of Conduct][] and the [guide][g] first.\n\nSee [Semantic Versioning] for the rules,"
            " [not a link] and `[Code of Conduct][]`.\n\n[Code of Conduct]: https://example.com/coc\n"
            "[g]: https://example.com/guide\n[semantic versioning]: https://semver.org\n")
    assert [s.text for s in MD.parse(text).segments] == [
        "Read the [Code of Conduct][Code of Conduct] and the [guide][g] first.",
        "See [Semantic Versioning][Semantic Versioning] for the rules, [not a link] and `[Code of Conduct][]`."]
    [r] = translate_documents([FileJob("a.md", text, MD)], Translator(Words(), tgt="fr"))
    assert r.failed == []
    assert r.text.startswith("zzread zzthe [zzcode of zzconduct][Code of Conduct] zzand zzthe [zzguide][g] zzfirst.\n\n"
                             "zzsee [zzsemantic zzversioning][Semantic Versioning] zzfor zzthe zzrules, [zznot a zzlink]"
                             " zzand `[Code of Conduct][]`.\n")
    assert MD.skeleton(r.text) == MD.skeleton(text)


def test_github_alert_markers_are_not_translated():
    from test_translation import Upper

    from jobs.translation import FileJob, Translator, translate_documents

    text = "> [!NOTE]\n> Useful information for users.\n\n> [!warning] Mind the gap.\n"
    [r] = translate_documents([FileJob("a.md", text, MD)], Translator(Upper(), tgt="fr"))
    assert r.text == "> [!NOTE]\n> USEFUL INFORMATION FOR USERS.\n\n> [!warning] MIND THE GAP.\n", r.failed

# -- output files --

def test_write_atomic_replaces_whole_files(tmp_path):
    out = tmp_path / "sub" / "doc.fr.md"
    write_atomic(out, "première version\n")
    assert out.read_text("utf-8") == "première version\n"
    os.chmod(out, 0o640)
    write_atomic(out, "deuxième\n")
    assert out.read_text("utf-8") == "deuxième\n"
    assert out.stat().st_mode & 0o777 == 0o640  # the existing file's mode kept
    assert [p.name for p in out.parent.iterdir()] == ["doc.fr.md"]


def test_write_atomic_never_leaves_half_a_file(tmp_path, monkeypatch):
    """A run killed while writing (here: the disk sync fails after the data
    was written) leaves the previous output whole and no temp file."""
    out = tmp_path / "doc.fr.md"
    out.write_text("old output\n", "utf-8")

    def crash(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="No space"):
        write_atomic(out, "new output " * 100_000)
    assert out.read_text("utf-8") == "old output\n"
    assert [p.name for p in tmp_path.iterdir()] == ["doc.fr.md"]
