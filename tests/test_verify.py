"""Each verification rule rejects what it must and accepts honest translations
(pure Python: the checks are functions of source and output)."""

from __future__ import annotations

import pytest

from jobs.translation import Glossary
from jobs.translation.prompts import PromptBuilder
from jobs.translation.verify import Verifier


def verifier(style: str = "base", tgt: str = "fr", glossary: Glossary | None = None) -> Verifier:
    return Verifier("en", tgt, PromptBuilder("en", tgt, glossary or Glossary(), style).leaks())


def problems(source: str, output: str, markup: str = "md", finish: str = "stop", **kw) -> list[str]:
    return verifier(**kw).problems(source, output, markup, finish)


@pytest.mark.parametrize("source,output,markup", [
    ("Hello {name}, welcome back.", "Bonjour {name}, bon retour.", "text"),
    ("Press **Save** to keep *your* changes.", "Appuyez sur **Enregistrer** pour garder *vos* modifications.", "md"),
    ("**Fast** and *small*.", "*Petit* et **rapide**.", "md"),  # reordered, not lost
    ("See [the docs](https://example.com/docs) for\nmore details on this.",
     "Voir [la documentation](https://example.com/docs) pour plus\nde détails à ce sujet.", "md"),  # reflowed
    ("Run `make test` before you push", "Lancez `make test` avant de pousser", "md"),
    ("Write to <mailto:team@example.com> today.", "Écrivez à <mailto:team@example.com> aujourd'hui.", "md"),
    ("![The logo](img/logo.png) of the project", "![Le logo](img/logo.png) du projet", "md"),
    ("Click <a href='/x'>here</a> and <b>there</b>.", "Cliquez <b>là</b> et <a href='/x'>ici</a>.",
     "html"),
    ("A note[^1] about [the guide][guide].", "Une note[^1] sur [le guide][guide].", "md"),
    ("Click the button to save your changes.", "ボタンをクリックして変更を保存します。", "text"),
])
def test_honest_translations_pass(source, output, markup):
    tgt = "ja" if "ボ" in output else "fr"
    assert problems(source, output, markup, tgt=tgt) == []


@pytest.mark.parametrize("source,output,markup,expect", [
    ("Hello {name}, welcome.", "Bonjour {name} {user}, bienvenue.", "text", "added '{user}'"),
    ("You have %d new messages.", "Vous avez %d %d %d nouveaux messages.", "text", "added '%d' (x2)"),
    ("Hello {name}, welcome.", "Bonjour, bienvenue.", "text", "missing '{name}'"),
    ("**How do I install it?** Run the installer.", "Comment l'installer ? Lancez l'installateur.", "md",
     "lost strong"),
    ("See [the docs](https://example.com/docs).", "Voir [la doc](https://example.com/doc).", "md",
     "lost link(https://example.com/docs)"),
    ("![The logo](logo.png) of the project", "[Le logo](logo.png) du projet", "md", "lost image(logo.png)"),
    ("Write to <mailto:team@example.com> today.", "Écrivez-nous aujourd'hui.", "md",
     "lost autolink(mailto:team@example.com)"),
    ("Run the tests with `make test`", "Lancez les tests avec", "md", "lost code(make test)"),
    ("First line  \nsecond line of it", "Première ligne deuxième ligne", "md", "lost hardbreak"),
    ("A note[^1] about it.", "Une note à ce sujet.", "md", "lost footnote(1)"),
    ("Use {name} in **bold** text", "Utilisez {name} en texte gras", "md", "lost strong"),
    ("Install it", "# Installez-le", "md", "added block heading_open"),
    ("Press <b>Save</b> now.", "Appuyez sur Enregistrer maintenant.", "md", "lost html<b>"),
    ("So {\\i1}this{\\i0} matters.", "Donc ceci compte.", "text", "missing '{\\\\i1}'"),
    ("Solve $x^2 = 4$ first.", "Résolvez $x^3 = 4$ d'abord.", "md", "missing '$x^2 = 4$'"),
    ("Click <a href='/x'>here</a> now.", "Cliquez <a href='/y'>ici</a> maintenant.", "html", "lost"),
])
def test_structure_and_placeholder_changes_are_rejected(source, output, markup, expect):
    assert any(expect in p for p in problems(source, output, markup)), problems(source, output, markup)



ICU = "{count, plural, =0 {Your cart is empty} one {You have # item} other {You have # items}}"


@pytest.mark.parametrize("output", [
    "{count, plural, =0 {Votre panier est vide} one {Vous avez # article} autre {Vous avez # articles}}",
    "{count, plural, =0 {Votre panier est vide} one {Vous avez un article} other {Vous avez # articles}}",
    "{count, plural, =0 {Votre panier est vide} one {Vous avez # article} other {Vous avez # articles}",
    "{nombre, pluriel, =0 {Votre panier est vide} one {Vous avez # article} other {Vous avez # articles}}",
    "{count, plural, =0 {Votre panier est vide} un {Vous avez # article} other {Vous avez # articles}}",
])
def test_icu_message_structure_changes_are_rejected(output):
    assert any("ICU message" in p for p in problems(ICU, output, "text")), problems(ICU, output, "text")


def test_icu_message_translated_case_texts_pass():
    out = "{count, plural, =0 {Votre panier est vide} one {Vous avez # article} other {Vous avez # articles}}"
    assert problems(ICU, out, "text") == []
    src = "{gender, select, male {He invited {name}} other {They invited {name}}}"
    assert problems(src, "{gender, select, male {Il a invité {name}} other {Ils ont invité {name}}}", "text") == []

def test_truncated_generation_is_rejected_even_when_it_looks_complete():
    assert problems("Good morning.", "Bonjour.", "text", finish="length") == \
        ["stopped at its token limit (truncated)"]


@pytest.mark.parametrize("source,output,expect", [
    ("Getting started", "French: Premiers pas", "prompt label 'French:'"),
    ("Getting started", "Premiers pas\nEnglish: Hello", "prompt label 'English:'"),
    ("Getting started", "Cliquez sur Enregistrer pour conserver vos modifications.", "few-shot example"),
    ("Getting started", "Bonjour, {name} ! Bon retour parmi nous.", "few-shot example"),
    ("Put one sentence on each line.", "Se connecter", "few-shot example"),  # a short example, whole
    ("Install the tool.", "Installez l'outil. Reply with the translation only: no explanations",
     "prompt text in output"),
    ("Install the tool.", "Installez l'outil. (Keep exactly as they are: placeholders like {name}",
     "prompt text in output"),
])
def test_prompt_text_in_output_is_rejected(source, output, expect):
    got = problems(source, output, "md")
    assert any(expect in p for p in got), got


def test_a_document_that_says_what_an_example_says_is_not_a_leak():
    assert problems("Click Save to keep your changes.", "Cliquez sur Enregistrer pour conserver vos modifications.",
                    "text") == []
    assert problems("Options: English: yes", "Options : English: oui", "text") == []
    assert problems("Sign in", "Se connecter", "text") == []


def test_glossary_lines_are_prompt_text():
    g = Glossary([("queue", "file d'attente")])
    got = problems("The queue is full.", "La file d'attente est pleine.\n- queue => file d'attente", "text",
                   style="chat", glossary=g)
    assert any("'=>'" in p for p in got), got


@pytest.mark.parametrize("source,output,expect", [
    ("The worker stores the results before noon.",
     "Le travailleur stocke les résultats avant midi. " * 4, "too long"),
    ("The worker stores the results. Then it sends a report to every user. Finally it cleans up old files.",
     "Le travailleur stocke.", "too short"),
    ("Run the installer and follow the prompts:", "Installer", "too short"),
])
def test_implausible_length_is_rejected(source, output, expect):
    got = problems(source, output, "text")
    assert any(expect in p for p in got), got


def test_length_bounds_know_cjk_is_dense():
    long_ja = "ボタンをクリックして変更を保存します。" * 3
    assert problems("Click the button to save your changes.", long_ja, "text", tgt="ja")
    assert problems("Click the button to save your changes.", "ボタンをクリックして変更を保存します。", "text", tgt="ja") == []


def test_a_cjk_target_answered_in_the_source_script_is_sized_as_such():
    """The first sentence copied and the rest dropped is a third of the source: short for
    Latin text, though Japanese would be that dense."""
    source = "The worker stores the results. Then it sends a report to every user. Finally it cleans up."
    assert any("too short" in p for p in problems(source, "The worker stores the results.", "text", tgt="ja"))
    assert problems("Open LLaMA Studio", "Open LLaMA Studio", "text", tgt="ja") == []  # a name stays


@pytest.mark.parametrize("source,output,tgt", [
    ("Install the tool.", "Deutsch: Installieren Sie das Werkzeug.", "de"),  # the target's own name
    ("Install the tool.", "**English:** Install the tool.\nInstallez l'outil.", "fr"),
    ("Install the tool.", "Installez l'outil.\nEspañol: Instale la herramienta.", "fr"),  # any language
    ("Install the tool.", "日本語：ツールをインストールします。", "ja"),
])
def test_a_language_label_line_is_prompt_text(source, output, tgt):
    """A model copying the few-shot layout labels its line with a language, not only
    the prompt's own two: from any source language, in English or in its own name."""
    v = Verifier(None, tgt, PromptBuilder(None, tgt, Glossary(), "base").leaks())
    got = v.problems(source, output, "md", "stop")
    assert any("language label" in p for p in got), got


def test_a_document_with_language_label_lines_keeps_them():
    v = Verifier(None, "de", PromptBuilder(None, "de", Glossary(), "base").leaks())
    assert v.problems("English: yes\nFrench: no", "English: ja\nFrench: nein", "md", "stop") == []
    assert v.problems("Available in English: yes", "Verfügbar auf Englisch: ja", "md", "stop") == []
