"""Syntax that real documents use and a Markdown flavour gives a meaning to
(GFM autolinks, MyST targets, MkDocs and Docusaurus admonitions, Liquid tags,
heading attributes), read back by that flavour's parser: markdown-it-py with
the mdit-py-plugins GitHub, MyST and MkDocs use. The translator changes every
word and keeps what it is shown masked, as a model does; what those parsers
see must not change."""

from __future__ import annotations

import re
from dataclasses import replace

from markdown_it import MarkdownIt
from mdit_py_plugins.admon import admon_plugin
from mdit_py_plugins.amsmath import amsmath_plugin
from mdit_py_plugins.colon_fence import colon_fence_plugin
from mdit_py_plugins.gfm import gfm_plugin
from mdit_py_plugins.myst_blocks import myst_block_plugin
from test_translation import Upper

from jobs.formats import format_named
from jobs.translation import FileJob, Translator, translate_documents

MD = format_named("md")
GFM = MarkdownIt("commonmark").use(gfm_plugin)
MYST = MarkdownIt("commonmark").use(myst_block_plugin).use(colon_fence_plugin)
MKDOCS = MarkdownIt("commonmark").use(admon_plugin)
AMSMATH = MarkdownIt("commonmark").use(amsmath_plugin)


class Words(Upper):
    """Every word of 3+ letters becomes another one; masked parts (⟦n⟧) and
    {placeholders} kept."""

    def run(self, jobs):
        for i, c in super().run(jobs):
            out = re.sub(r"(?<![⟦\w{])([A-Za-z]{3,})(?![\w}])", lambda m: "zz" + m.group(1).lower(), self.seen[-1])
            yield i, replace(c, text=out)


def translated(text: str) -> str:
    [r] = translate_documents([FileJob("doc.md", text, MD)], Translator(Words(), tgt="de"))
    assert r.failed == []
    assert "zz" in r.text  # the prose was translated
    return r.text


def walk(tokens):
    for t in tokens:
        yield t
        yield from walk(t.children or [])


def structure(md: MarkdownIt, text: str) -> list[tuple]:
    """Every token but text, with its attributes (but alt and title), info
    and the content of what is not prose."""
    out = []
    for t in walk(md.parse(text)):
        if t.type in ("text", "softbreak", "inline"):
            continue
        attrs = sorted((k, str(v)) for k, v in t.attrs.items() if k not in ("alt", "title"))
        content = t.content if t.type in ("myst_target", "code_inline", "fence", "code_block", "amsmath") else None
        out.append((t.type, t.nesting, attrs, t.info if t.type in ("fence", "colon_fence") else "", content))
    return out


def test_gfm_autolinked_emails_and_www_addresses_keep_their_targets():
    text = ("Contact support@example.com or see www.example.com/docs for help.\n\n"
            "- Reports go to security-team@lists.example.org first.\n")
    out = translated(text)
    assert structure(GFM, out) == structure(GFM, text)
    assert "support@example.com" in out and "www.example.com/docs" in out


def test_myst_target_with_spaces_is_not_prose():
    """pip's docs open with "(SSL Certificate Verification)=": a MyST label."""
    text = "(SSL Certificate Verification)=\n\n# SSL Certificate Verification\n\nSome words here.\n"
    out = translated(text)
    assert out.startswith("(SSL Certificate Verification)=\n\n")
    assert structure(MYST, out) == structure(MYST, text)


def admonitions(md: MarkdownIt, text: str) -> list[tuple]:
    """The structure with an admonition's or colon fence's type, not its title."""
    return [(ty, n, attrs, info.split()[0] if ty == "colon_fence" and info.strip() else "", content)
            for ty, n, attrs, info, content in structure(md, text)]


def test_mkdocs_admonition_keeps_its_type_and_its_body():
    text = ('!!! note "Read this first"\n    The body of the note\n    goes on here.\n\n'
            '??? warning\n\n    A collapsed body.\n\nAfter the notes.\n')
    out = translated(text)
    assert admonitions(MKDOCS, out) == admonitions(MKDOCS, text)
    assert '!!! note "Read this first"\n    zzthe zzbody of zzthe zznote\n    zzgoes on zzhere.\n' in out


def test_admonition_marker_line_is_not_part_of_the_segment():
    """Shown '⟦1⟧ "Before you start"\nMake sure...', Gemma 3 270M answered the first
    line only: the admonition lost its body. The model sees the body alone."""
    text = '!!! note "Before you start"\n    Make sure Python 3.10\n    or newer is installed.\n\n:::tip Advice\nUse a venv.\n:::\n'
    doc = MD.parse(text)
    assert [s.text for s in doc.segments] == ["Make sure Python 3.10\nor newer is installed.", "Use a venv."]
    r = MD.render(doc, ["Python 3.10 oder neuer\nmuss installiert sein.", "Nimm ein venv."])
    assert r.text == ('!!! note "Before you start"\n    Python 3.10 oder neuer\n    muss installiert sein.\n\n'
                      ":::tip Advice\nNimm ein venv.\n:::\n") and r.rejected == {}


def test_colon_fence_admonitions_keep_their_type():
    """Docusaurus (":::tip Title"), markdown-it-container ("::: warning") and
    mkdocstrings ("::: llama_cpp.Llama", from llama-cpp-python's docs) blocks."""
    text = (":::tip Helpful advice\n\nThe tip itself.\n\n:::\n\n::: warning\nThe warning text.\n:::\n\n"
            "## High Level API\n\n::: llama_cpp.Llama\n    options:\n        members:\n            - tokenize\n"
            "        show_root_heading: true\n")
    out = translated(text)
    assert admonitions(MYST, out) == admonitions(MYST, text)
    assert out.startswith(":::tip zzhelpful zzadvice\n")
    assert out.endswith("::: llama_cpp.Llama\n    options:\n        members:\n            - tokenize\n"
                        "        show_root_heading: true\n")  # mkdocstrings options: verbatim


def test_github_alert_marker_line_stays_the_marker_line():
    """From llama.cpp's READMEs: a marker line ending in a trailing-space hard
    break, and a body line continuing the quote lazily (markdown-it-py's GFM
    alert then ends at the marker line)."""
    text = ("> [!IMPORTANT]  \n> This was tested with Docker on Linux. <br>Please update this file.\n\n"
            "> [!NOTE]\n[2024 Jun 12] Binaries have been renamed with a prefix.\n")
    out = translated(text)
    assert structure(GFM, out) == structure(GFM, text)
    assert MD.skeleton(out) == MD.skeleton(text)


def test_a_term_translation_joined_into_one_line_gets_its_start_escaped():
    """A term is one line: a translation over lines is joined, and a joined
    line starting with ": " would be a definition (hypothesis found ":\\n```\\nTerm")."""
    src = "Term one\n: The first definition.\n\nTerm two\n: Another definition\n"
    doc = MD.parse(src)
    r = MD.render(doc, ["Terme un", "La première.", ":\n```\nTerme deux", "Une autre définition"])
    assert r.rejected == {}
    assert r.text.endswith("\n\n\\: \\`\\`\\` Terme deux\n: Une autre définition\n")
    assert MD.skeleton(r.text) == MD.skeleton(src)


def test_stdin_that_is_not_utf8_is_a_clear_error(tmp_path):
    from click.testing import CliRunner

    from cli.translate import command

    r = CliRunner().invoke(command, ["-", "--to", "de", "--model", str(tmp_path / "never-loaded.gguf"),
                                     "--no-memory"], input=b"Caf\xe9 au lait\n")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception
    assert "stdin is not UTF-8 text" in r.output


def test_site_generator_syntax_is_kept():
    """Jekyll/Liquid tags, attribute lists (Pandoc, kramdown, MkDocs attr_list),
    table-of-contents markers and wiki links are not prose."""
    text = ('{% include note.html content="Install it first" %}\n\n'
            "## Install the thing {#install .wide}\n\n"
            "[TOC]\n\n"
            "See the [[Installation Guide]] and {% link docs/setup.md %} for details.\n{: .lead}\n")
    out = translated(text)
    for kept in ('{% include note.html content="Install it first" %}\n', "{#install .wide}\n", "\n[TOC]\n",
                 "[[Installation Guide]]", "{% link docs/setup.md %}", "{: .lead}"):
        assert kept in out, kept


def test_po_with_one_plural_form_gets_the_plural_translation():
    """Japanese, Chinese, Korean... have one form, used for every n: it is the
    msgid_plural's translation (the singular lost %d; msgfmt -c rejects it)."""
    po = format_named("po")
    head = 'msgid ""\nmsgstr ""\n"Plural-Forms: nplurals=1; plural=0;\\n"\n\n#, c-format\n'
    src = head + 'msgid "One file was deleted"\nmsgid_plural "%d files were deleted"\nmsgstr[0] ""\n'
    r = po.render(po.parse(src), ["1 Datei wurde gelöscht", "%d Dateien wurden gelöscht"])
    assert r.text == head + 'msgid "One file was deleted"\nmsgid_plural "%d files were deleted"\n' \
                            'msgstr[0] "%d Dateien wurden gelöscht"\n'


def test_json_with_a_byte_order_mark_is_translated_and_keeps_it():
    """Windows editors (Visual Studio, Notepad) save i18n JSON with a BOM."""
    import json

    fmt = format_named("json")
    src = '\ufeff{\r\n  "greeting": "Hello world",\r\n  "count": 3\r\n}\r\n'
    doc = fmt.parse(src)
    assert [s.text for s in doc.segments] == ["Hello world"]
    r = fmt.render(doc, ["Hallo Welt"])
    assert r.text == '\ufeff{\r\n  "greeting": "Hallo Welt",\r\n  "count": 3\r\n}\r\n'
    assert json.loads(r.text.encode("utf-8").decode("utf-8-sig")) == {"greeting": "Hallo Welt", "count": 3}


def test_latex_environments_are_math_not_prose():
    """\\begin{equation}...\\end{equation} (Jupyter, MathJax, MyST's amsmath) is verbatim."""
    text = ("The energy equation:\n\n\\begin{equation}\nE = mc^2 \\label{eq:energy}\n\\end{equation}\n\n"
            "Then \\begin{align*} a &= b \\\\ c &= d \\end{align*} inline.\n")
    out = translated(text)
    assert structure(AMSMATH, out) == structure(AMSMATH, text)
    assert "\\begin{align*} a &= b \\\\ c &= d \\end{align*}" in out


def test_github_alert_marker_line_is_not_part_of_the_segment():
    """The model sees the alert's text only: Gemma 3 270M dropped the masked
    marker of 3 alerts in 4 in llama-cpp-python's docker README."""
    text = "> [!IMPORTANT]  \n> This was tested with Docker.\n> Update this file.\n\n> [!NOTE]\n> Make sure.\n"
    doc = MD.parse(text)
    assert [s.text for s in doc.segments] == ["This was tested with Docker.\nUpdate this file.", "Make sure."]
    r = MD.render(doc, ["Mit Docker getestet.\nAktualisieren\n- Sie diese Datei.", "Achtung."])
    assert r.rejected == {}
    assert r.text == ("> [!IMPORTANT]  \n> Mit Docker getestet.\n> Aktualisieren\n> \\- Sie diese Datei.\n\n"
                      "> [!NOTE]\n> Achtung.\n")
    assert structure(GFM, r.text) == structure(GFM, text)


def test_a_file_that_is_not_utf8_is_an_error_and_writes_nothing(tmp_path, tiny_model_path):
    """It was parsed as an empty document: an empty output file, reported as fine."""
    import json

    from click.testing import CliRunner

    from cli.translate import command

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "latin1.md").write_bytes(b"# Caf\xe9\n")
    r = CliRunner().invoke(command, [str(tmp_path / "in"), "--to", "de", "--out", str(tmp_path / "out"), "--model",
                                     str(tiny_model_path), "--no-memory", "--max-tokens", "4", "--json"])
    assert r.exit_code == 1, r.output
    report = json.loads(r.stdout[r.stdout.index("{\n"):])
    assert [f["error"] for f in report["files"]] == ["not UTF-8 text"] and not report["ok"]
    assert not (tmp_path / "out" / "latin1.md").exists()


def test_po_plural_entry_is_written_whole_or_not_at_all():
    """One form failed (kept in source) and the other translated: the entry stays
    untranslated; it got an English msgstr[1] (Gemma on Django's djangojs.po)."""
    po = format_named("po")
    src = 'msgid "%s hour ahead"\nmsgid_plural "%s hours ahead"\nmsgstr[0] ""\nmsgstr[1] ""\n'
    doc = po.parse(src)
    r = po.render(doc, ["%s Stunde voraus", "%s hours ahead"])
    assert r.text == src and list(r.rejected) == [0]
    r = po.render(doc, ["%s Stunde voraus", "%s Stunden voraus"])
    assert r.text.endswith('msgstr[0] "%s Stunde voraus"\nmsgstr[1] "%s Stunden voraus"\n') and r.rejected == {}


def test_an_html_comment_inside_a_paragraph_is_masked():
    """Shown to the model, a comment ("<!-- TODO: link -->") was translated, the
    structure check (comments are structure) failed it, and only a retry kept it."""
    text = "Install the package first. <!-- TODO: add the link --> Then run it.\n"
    words = Words()
    [r] = translate_documents([FileJob("doc.md", text, MD)], Translator(words, tgt="de"))
    assert r.text == "zzinstall zzthe zzpackage zzfirst. <!-- TODO: add the link --> zzthen zzrun it.\n"
    assert words.calls == 1  # on the first try


def test_one_character_code_spans_are_masked_alone():
    """Rust's release notes: "`?` with `Option`" was one masked run ("`?` with `") and
    `Option`'s content was shown to the model, translated, and the segment failed."""
    from jobs.placeholders import find, protect

    text = "Use `?` with `Option` and `_` as `x` here."
    assert find(text, "md") == ["`?`", "`Option`", "`_`", "`x`"]
    assert protect(text, "md").text == "Use ⟦1⟧ with ⟦2⟧ and ⟦3⟧ as ⟦4⟧ here."


def test_myst_comment_lines_are_not_prose():
    text = "% A comment for the docs' maintainers\n% on two lines\n\nSome words here.\n"
    doc = MD.parse(text)
    assert [s.text for s in doc.segments] == ["Some words here."]
    out = translated(text)
    assert structure(MYST, out) == structure(MYST, text)
