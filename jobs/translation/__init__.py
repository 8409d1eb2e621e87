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

__all__ = [
    "ApiError", "ApiSubmitter", "Completion", "DocumentResult", "EngineSubmitter", "FileJob", "Glossary",
    "Job", "Outcome", "Progress", "Submitter", "TranslationMemory", "Translator", "default_path",
    "load_glossary", "translate_documents",
]
