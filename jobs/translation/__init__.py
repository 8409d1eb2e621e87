"""Document translation: prompts, glossary, output hygiene, translation memory,
and the pipeline that runs segments through a Submitter (an in-process engine,
or a llamaq server's batch API).

    from jobs.translation import Translator, EngineSubmitter, TranslationMemory
    t = Translator(EngineSubmitter(engine), tgt="ja", memory=TranslationMemory(path))
    outcomes = t.translate(doc.segments)       # [Outcome(text|None, origin, problems, warnings)]
"""

from .documents import DocumentResult, FileJob, translate_documents
from .glossary import Glossary, load_glossary
from .memory import TranslationMemory, default_path
from .pipeline import Outcome, Progress, Translator
from .submitters import ApiError, ApiSubmitter, Completion, EngineSubmitter, Job, Submitter



def build_prompt(engine, text: str, *, target_language: str, source_language: str | None = None,
                 glossary: dict[str, str] | None = None) -> str:
    """One translation prompt as text for engine.submit (used by the
    "translation" job kind): the same instructions as the CLI, through the
    model's chat template or its plain-text fallback (stop: chat_for(engine).stop)."""
    from ..chat import chat_for
    from .prompts import PromptBuilder

    g = Glossary(list((glossary or {}).items()))
    p = PromptBuilder(source_language, target_language, g, "chat").build(text)
    return chat_for(engine).render(p.messages)


__all__ = [
    "build_prompt",
    "ApiError", "ApiSubmitter", "Completion", "DocumentResult", "EngineSubmitter", "FileJob", "Glossary",
    "Job", "Outcome", "Progress", "Submitter", "TranslationMemory", "Translator", "default_path",
    "load_glossary", "translate_documents",
]
