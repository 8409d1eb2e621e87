"""The translation pipeline's parts, with a deterministic stand-in for the model
(the engine itself is exercised in test_translate_e2e.py)."""

from __future__ import annotations

import re

import pytest

from jobs.formats import format_for
from jobs.translation import Completion, Glossary, TranslationMemory, Translator, load_glossary
from jobs.translation.hygiene import clean
from jobs.translation.memory import memory_key
from jobs.translation.prompts import PromptBuilder


class Upper:
    """A Submitter that 'translates' by uppercasing the segment found at the end of
    the prompt. drop: placeholders it loses on a first attempt (not when the prompt
    names them, as the retry does)."""

    model_id = "upper"

    def __init__(self, chat: bool = True, drop: tuple[str, ...] = (), fail_after: int | None = None,
                 always_drop: bool = False):
        self.has_chat_template = chat
        self.calls = 0
        self.seen: list[str] = []
        self.drop, self.fail_after, self.always_drop = drop, fail_after, always_drop

    def run(self, jobs):
        for i, job in enumerate(jobs):
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise KeyboardInterrupt
            self.calls += 1
            p = job.prompt
            seg = p.messages[-1]["content"] if p.messages else p.text.rsplit("\nText: ", 1)[-1].rsplit("\n", 1)[0]
            retry = "(Keep these unchanged" in seg
            seg = seg.split("\n(Keep these unchanged")[0]
            self.seen.append(seg)
            keep = re.compile(r"⟦\d+⟧|\{\w+\}|%s")
            out = "".join(part if keep.fullmatch(part) else part.upper() for part in re.split(r"(⟦\d+⟧|\{\w+\}|%s)", seg))
            if not retry or self.always_drop:
                for d in self.drop:
                    out = out.replace(d, "")
            yield i, Completion("Translation: " + out, "stop", len(out))


def segs(text: str, name: str = "x.md"):
    return format_for(name).parse(text).segments


def test_identical_segments_are_translated_once():
    up = Upper()
    t = Translator(up, tgt="de")
    outs = t.translate(segs("Hello.\n\nWorld.\n\nHello.\n", "x.txt"))
    assert [o.text for o in outs] == ["HELLO.", "WORLD.", "HELLO."]
    assert up.calls == 2


def test_memory_makes_a_rerun_free_and_keys_on_model_languages_glossary(tmp_path):
    db = tmp_path / "tm.sqlite3"
    doc = segs("# Title\n\nSome `code` here.\n\n- item\n")
    first = Upper()
    Translator(first, tgt="de", memory=TranslationMemory(db)).translate(doc)
    assert first.calls == 3
    again = Upper()
    outs = Translator(again, tgt="de", memory=TranslationMemory(db)).translate(doc)
    assert again.calls == 0 and all(o.origin == "memory" for o in outs)
    assert outs[1].text == "SOME `code` HERE."  # inline code masked from the model, restored
    other = Upper()
    Translator(other, tgt="fr", memory=TranslationMemory(db)).translate(doc)
    assert other.calls == 3
    gl = Upper()
    Translator(gl, tgt="de", memory=TranslationMemory(db), glossary=Glossary([("item", "Eintrag")])).translate(doc)
    assert gl.calls == 3
    k = dict(model="m", src="en", tgt="de", glossary="", prompt="1chat", markup="md", text="a")
    assert memory_key(**k) != memory_key(**(k | {"model": "n"})) != memory_key(**(k | {"src": None}))


def test_interrupted_run_resumes_where_it_stopped(tmp_path):
    db = tmp_path / "tm.sqlite3"
    doc = segs("\n\n".join(f"Paragraph number {i}." for i in range(10)), "x.txt")
    with pytest.raises(KeyboardInterrupt):
        Translator(Upper(fail_after=4), tgt="de", memory=TranslationMemory(db)).translate(doc)
    rest = Upper()
    outs = Translator(rest, tgt="de", memory=TranslationMemory(db)).translate(doc)
    assert rest.calls == 6
    assert sum(o.origin == "memory" for o in outs) == 4
    assert [o.text for o in outs] == [f"PARAGRAPH NUMBER {i}." for i in range(10)]


def test_lost_placeholder_is_retried_once_then_reported(tmp_path):
    up = Upper(drop=("{name}",))
    outs = Translator(up, tgt="de").translate(segs("Hello {name}, welcome.\n\nPlain text.\n", "x.txt"))
    assert outs[0].text == "HELLO {name}, WELCOME." and outs[0].origin == "model"
    assert up.calls == 3  # two segments, one retry
    assert "{name}" in up.seen[-1]

    stubborn = Upper(drop=("{name}",), always_drop=True)
    db = TranslationMemory(tmp_path / "tm.sqlite3")
    outs = Translator(stubborn, tgt="de", memory=db).translate(segs("Hello {name}.\n", "x.txt"))
    assert outs[0].text is None and outs[0].origin == "failed"
    assert outs[0].problems == ["missing '{name}'"]
    assert stubborn.calls == 2
    assert len(db) == 0  # never remembered as a translation


def test_masked_markdown_marker_lost_is_caught():
    up = Upper(drop=("⟦1⟧",), always_drop=True)
    outs = Translator(up, tgt="de").translate(segs("See [the docs](https://example.com/docs).\n"))
    assert outs[0].text is None
    assert any("https://example.com/docs" in p for p in outs[0].problems)


def test_glossary_misses_are_reported(tmp_path):
    csv = tmp_path / "terms.csv"
    csv.write_text("source,target,lang\nqueue,Warteschlange,de\nqueue,file d'attente,fr\nworker,Worker\n")
    g = load_glossary(csv, "de")
    assert g.terms == [("queue", "Warteschlange"), ("worker", "Worker")]
    outs = Translator(Upper(), tgt="de", glossary=g).translate(segs("The queue and the worker.\n", "x.txt"))
    assert outs[0].warnings == ["glossary: 'queue' should be 'Warteschlange'"]  # WORKER matches Worker
    assert "- queue => Warteschlange" in PromptBuilder(None, "de", g, "chat").instructions()
    bad = tmp_path / "bad.csv"
    bad.write_text("only-one-column\n")
    with pytest.raises(ValueError, match="bad.csv:1"):
        load_glossary(bad, "de")


def test_prompts_share_the_instructions_and_end_with_the_segment():
    g = Glossary([("job", "ジョブ")])
    for style in ("chat", "base"):
        b = PromptBuilder("en", "ja", g, style)
        p1, p2 = b.build("First segment."), b.build("Second one.")
        if style == "chat":
            assert p1.messages[0] == p2.messages[0] and p1.messages[0]["role"] == "system"
            assert p1.messages[-1] == {"role": "user", "content": "First segment."}
        else:
            prefix = p1.text[: p1.text.index("First segment.")]
            assert p2.text.startswith(prefix) and "ジョブ" in prefix
            assert p1.text.endswith("English: First segment.\nJapanese:")
            assert "こんにちは" in prefix  # few-shot examples for known languages
            assert p1.stop == ["\n"] and "\n\n" in b.build("two\nlines").stop


@pytest.mark.parametrize("raw,source,expected", [
    ("Japanese: こんにちは", "Hello", "こんにちは"),
    ('"Hallo Welt"', "Hello world", "Hallo Welt"),
    ("「こんにちは」", "Hello", "こんにちは"),
    ("Hallo Welt\n\nNote: I translated 'world' literally.", "Hello world", "Hallo Welt"),
    ("Hallo\n(Note: informal)", "Hello", "Hallo"),
    ("Hello world\nHallo Welt", "Hello world", "Hallo Welt"),
    ("```\nHallo\n```", "Hello", "Hallo"),
    ("Zeile eins\nZeile zwei", "Line one\nline two", "Zeile eins\nZeile zwei"),
    ('"Quoted" stays', '"Quoted" stays', '"Quoted" stays'),
])
def test_output_hygiene(raw, source, expected):
    assert clean(raw, source, "Japanese" if "こん" in raw else "German") == expected


def test_base_style_prompt_for_models_without_a_chat_template():
    up = Upper(chat=False)
    t = Translator(up, tgt="de")
    assert t.prompts.style == "base"
    assert t.translate(segs("Good morning.\n", "x.txt"))[0].text == "GOOD MORNING."
