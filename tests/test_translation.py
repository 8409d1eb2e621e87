"""The translation pipeline's parts, with a deterministic stand-in for the model
(the engine itself is exercised in test_translate_e2e.py)."""

from __future__ import annotations

import re

import pytest

from jobs.formats import format_for
from jobs.translation import Completion, Glossary, TranslationMemory, Translator, load_glossary
from jobs.translation.hygiene import clean
from jobs.translation.memory import memory_key
from jobs.translation.pipeline import LADDER, Rung
from jobs.translation.prompts import PromptBuilder


class Upper:
    """A Submitter that 'translates' by uppercasing the segment found at the end of
    the prompt. drop: placeholders it loses on a first attempt (greedy, first
    prompt variant), or on every attempt with always_drop."""

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
            retry = job.temperature > 0 or (len(p.messages) == 2 if p.messages else not p.text.startswith("Translate"))
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


def test_lost_placeholder_climbs_the_ladder_then_keeps_source_and_is_remembered(tmp_path):
    up = Upper(drop=("{name}",))
    outs = Translator(up, tgt="de").translate(segs("Hello {name}, welcome.\n\nPlain text.\n", "x.txt"))
    assert outs[0].text == "HELLO {name}, WELCOME." and outs[0].origin == "model" and outs[0].tries == 2
    assert outs[1].tries == 1
    assert up.calls == 3  # two segments, one retry

    stubborn = Upper(drop=("{name}",), always_drop=True)
    db = TranslationMemory(tmp_path / "tm.sqlite3")
    outs = Translator(stubborn, tgt="de", memory=db).translate(segs("Hello {name}.\n", "x.txt"))
    assert outs[0].text is None and outs[0].origin == "failed"
    assert outs[0].problems == ["missing '{name}'"]
    assert stubborn.calls == len(LADDER)
    key = Translator(stubborn, tgt="de")._key("text", "Hello {name}.")
    assert db.get_many([key]) == {} and list(db.failures_many([key])) == [key]  # not a translation
    again = Upper(drop=("{name}",), always_drop=True)
    outs = Translator(again, tgt="de", memory=db).translate(segs("Hello {name}.\n", "x.txt"))
    assert again.calls == 0 and outs[0].text is None and outs[0].problems == ["missing '{name}'"]
    assert outs[0].origin == "memory"
    fixed = Upper()
    outs = Translator(fixed, tgt="de", memory=db, retry_failed=True).translate(segs("Hello {name}.\n", "x.txt"))
    assert fixed.calls == 1 and outs[0].text == "HELLO {name}."
    assert Translator(Upper(), tgt="de", memory=db).translate(segs("Hello {name}.\n", "x.txt"))[0].origin == "memory"


def test_masked_markdown_marker_lost_is_caught():
    up = Upper(drop=("⟦1⟧",), always_drop=True)
    outs = Translator(up, tgt="de", inline="raw", ladder=(Rung(),)).translate(
        segs("See [the docs](https://example.com/docs).\n"))
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
            assert p1.stop == ["\n", "\nEnglish:", "\nJapanese:"]
            assert b.build("two\nlines").stop == ["\nEnglish:", "\nJapanese:", "\n\n"]


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
    ("1. 1. Eine Datei anlegen", "Create a file", "Eine Datei anlegen"),  # an item's number, repeated
    ("2) Eine Datei anlegen", "Create a file", "Eine Datei anlegen"),
    ("1. Schritt: anlegen", "1. Step: create", "1. Schritt: anlegen"),  # the source has it
    ("2020. Ein gutes Jahr", "2020 was a good year", "2020. Ein gutes Jahr"),  # a year, not a number
])
def test_output_hygiene(raw, source, expected):
    assert clean(raw, source, "Japanese" if "こん" in raw else "German") == expected


def test_base_style_prompt_for_models_without_a_chat_template():
    up = Upper(chat=False)
    t = Translator(up, tgt="de")
    assert t.prompts.style == "base"
    assert t.translate(segs("Good morning.\n", "x.txt"))[0].text == "GOOD MORNING."


class Scripted:
    """An adversarial Submitter: answers each segment (as the model sees it) with
    the next of its scripted outputs, the last one repeating; records prompts."""

    model_id = "scripted"

    def __init__(self, script: dict[str, list], chat: bool = True):
        self.script, self.has_chat_template = script, chat
        self.calls, self.prompts, self.asked = 0, [], {}

    def run(self, jobs):
        for i, job in enumerate(jobs):
            self.calls += 1
            p = job.prompt
            self.prompts.append(p)
            seg = p.messages[-1]["content"] if p.messages else p.text.rsplit("\nEnglish: ", 1)[-1][: -len("\nFrench:")]
            k = self.asked[seg] = self.asked.get(seg, -1) + 1
            answers = self.script.get(seg, [""])  # not scripted: an empty answer
            a = answers[min(k, len(answers) - 1)]
            yield i, a if isinstance(a, Completion) else Completion(a, "stop", 5)


QA = "**How do I install it?** Run the installer."
QA_OK = "**Comment l'installer ?** Lancez l'installateur."
SCRIPT = {
    QA: ["Comment l'installer ? Lancez l'installateur.",  # bold dropped
         "French: " + QA_OK + "\nEnglish: Hello",  # label, then runs on into another example: both cut
         "never asked"],
    "Thanks for reading.": [Completion("Merci de votre lecture.", "length"), "Merci de votre lecture."],
    "Getting started": ["Enregistrer, cliquez sur <b>Enregistrer</b> pour conserver vos modifications."],
    "Hello {name}.": ["Bonjour {name} {user}.", "Bonjour {name}."],
    "See the [guide]⟦1⟧.": ["Voir le [guide]⟦1⟧ ⟦1⟧.", "Voir le guide.", "Voir le [guide](https://x.org/autre).",
                            "Voir le [guide]⟦1⟧ (Keep these unchanged in the translation: ⟦1⟧)"],
}
DOC = f"# Getting started\n\n{QA}\n\nHello {{name}}.\n\nSee the [guide](https://x.org/guide).\n\nThanks for reading.\n"


@pytest.mark.parametrize("chat", [True, False])
def test_adversarial_model_each_rule_rejects_and_failures_keep_source(chat):
    from markdown_it import MarkdownIt

    from jobs.formats import format_named
    from jobs.translation import FileJob, translate_documents

    sub = Scripted(SCRIPT, chat=chat)
    t = Translator(sub, tgt="fr", src="en", inline="raw")
    [r] = translate_documents([FileJob("doc.md", DOC, format_named("md"))], t)
    out = r.text
    assert "# Getting started\n" in out  # the leaked few-shot sentence was rejected: source kept
    assert QA_OK in out and "Bonjour {name}." in out
    assert "See the [guide](https://x.org/guide)." in out  # four bad answers: source kept
    assert "Keep these" not in out and "French:" not in out and "English:" not in out
    assert sorted(f["segment"] for f in r.failed) == ["Getting started", "See the [guide](https://x.org/guide)."]
    problems = {f["segment"]: " | ".join(f["problems"]) for f in r.failed}
    assert "added '<b>'" in problems["Getting started"] and "few-shot example" in problems["Getting started"]
    assert "lost link(https://x.org/guide)" in problems["See the [guide](https://x.org/guide)."]
    md = MarkdownIt("commonmark")
    shape = lambda text: [(t.type, t.tag) for t in md.parse(text)]  # noqa: E731
    assert shape(out) == shape(DOC)
    assert sub.asked[QA] == 1 and sub.asked["Thanks for reading."] == 1  # accepted on the second rung
    assert "Merci de votre lecture." in out


@pytest.mark.parametrize("chat", [True, False])
def test_retries_put_nothing_next_to_the_segment(chat):
    sub = Scripted(SCRIPT, chat=chat)
    Translator(sub, tgt="fr", src="en", inline="raw").translate(segs(DOC))
    assert sub.calls > 4  # retries happened
    shown = set(SCRIPT) | {"<1>How do I install it?</1> Run the installer.", "See the <1>guide</1>."}
    for p in sub.prompts:
        if chat:
            seg = p.messages[-1]["content"]
            assert seg in shown and p.messages[-1]["role"] == "user"
            assert all(seg not in m["content"] for m in p.messages[:-1])
        else:
            seg = p.text.rsplit("\nEnglish: ", 1)[-1][: -len("\nFrench:")]
            assert seg in shown and p.text.endswith(f"English: {seg}\nFrench:")
            assert "\nEnglish:" in p.stop and "\nFrench:" in p.stop


def test_output_running_on_into_another_example_is_cut():
    assert clean("Premiers pas\nEnglish: Hello\nFrench: Bonjour", "Getting started", "French",
                 ["English", "French"]) == "Premiers pas"
    assert clean("English: Hello", "Getting started", "French", ["English", "French"]) == ""


def test_inline_markdown_is_shown_as_numbered_tags_and_restored():
    up = Upper()
    outs = Translator(up, tgt="de", inline="tags").translate(
        segs("Press **Save** to keep [the *docs*](docs/a.md), then run `make` or mail <team@x.org>.\n"))
    assert up.seen == ["Press <1>Save</1> to keep <2>the <3>docs</3></2>, then run <4/> or mail <5/>."]
    assert outs[0].text == "PRESS **SAVE** TO KEEP [THE *DOCS*](docs/a.md), THEN RUN `make` OR MAIL <team@x.org>."
    assert outs[0].tries == 1


def test_raw_markdown_first_then_tags_on_the_alternate_rung():
    sub = Scripted({"Press **Save** now.": ["Appuyez sur Enregistrer maintenant."],
                    "Press <1>Save</1> now.": ["Appuyez sur <1>Enregistrer</1> maintenant."]})
    outs = Translator(sub, tgt="fr", src="en").translate(segs("Press **Save** now.\n"))
    assert outs[0].text == "Appuyez sur **Enregistrer** maintenant." and outs[0].tries == 3
    assert sub.asked == {"Press **Save** now.": 1, "Press <1>Save</1> now.": 0}


def test_broken_tags_are_rejected_and_the_raw_rung_gets_a_turn():
    seg = "Press <1>Save</1> now."
    sub = Scripted({seg: ["Appuyez sur <1>Enregistrer maintenant.", "<1>Appuyez</1> <1>sur</1>"],
                    "Press **Save** now.": ["Appuyez sur **Enregistrer** maintenant."]})
    outs = Translator(sub, tgt="fr", src="en", inline="tags").translate(segs("Press **Save** now.\n"))
    assert outs[0].text == "Appuyez sur **Enregistrer** maintenant." and outs[0].tries == 3
    assert sub.asked == {seg: 1, "Press **Save** now.": 0}
    text = Scripted({seg: ["# Appuyez sur <1>*Enregistrer*</1> # maintenant."]})
    outs = Translator(text, tgt="fr", src="en", inline="tags").translate(segs("Press **Save** now.\n"))
    assert outs[0].text == "\\# Appuyez sur **\\*Enregistrer\\*** # maintenant."  # the model's syntax is text


def test_math_and_footnote_refs_are_atoms_the_model_cannot_edit():
    up = Upper()
    outs = Translator(up, tgt="de", inline="tags").translate(segs("A note[^cache] on $a_1$ and **b**.\n\n[^cache]: Text.\n"))
    assert up.seen[0] == "A note<1/> on <2/> and <3>b</3>."
    assert outs[0].text == "A NOTE[^cache] ON $a_1$ AND **B**."
