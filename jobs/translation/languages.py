"""Language codes to English names, and few-shot examples for base models."""

from __future__ import annotations

NAMES = {
    "en": "English", "ja": "Japanese", "de": "German", "fr": "French", "es": "Spanish",
    "it": "Italian", "pt": "Portuguese", "pt-br": "Brazilian Portuguese", "ru": "Russian",
    "zh": "Chinese", "zh-cn": "Simplified Chinese", "zh-tw": "Traditional Chinese", "ko": "Korean",
    "nl": "Dutch", "pl": "Polish", "sv": "Swedish", "da": "Danish", "fi": "Finnish", "no": "Norwegian",
    "nb": "Norwegian", "cs": "Czech", "tr": "Turkish", "uk": "Ukrainian", "ar": "Arabic", "he": "Hebrew",
    "hi": "Hindi", "id": "Indonesian", "vi": "Vietnamese", "th": "Thai", "el": "Greek", "hu": "Hungarian",
    "ro": "Romanian", "bg": "Bulgarian", "ca": "Catalan", "fa": "Persian", "ms": "Malay",
}

# What languages call themselves: a model labels a line with these too ("Deutsch: ...").
NATIVE = {
    "ja": "日本語", "de": "Deutsch", "fr": "Français", "es": "Español", "it": "Italiano", "pt": "Português",
    "ru": "Русский", "zh": "中文", "ko": "한국어", "nl": "Nederlands", "pl": "Polski", "sv": "Svenska",
    "da": "Dansk", "fi": "Suomi", "no": "Norsk", "cs": "Čeština", "tr": "Türkçe", "uk": "Українська",
    "ar": "العربية", "he": "עברית", "hi": "हिन्दी", "id": "Bahasa Indonesia", "vi": "Tiếng Việt",
    "th": "ไทย", "el": "Ελληνικά", "hu": "Magyar", "ro": "Română", "bg": "Български", "ca": "Català",
    "fa": "فارسی", "ms": "Bahasa Melayu",
}

# The same sentences in several languages (a short label among them: a lone word is a
# segment too); few-shot pairs for base models and worked examples for chat models.
EXAMPLES = {
    "en": ["Hello, {name}! Welcome back.", "Click <b>Save</b> to keep your changes.", "Sign in"],
    "ja": ["こんにちは、{name}さん！おかえりなさい。", "変更を保存するには<b>保存</b>をクリックしてください。", "ログイン"],
    "de": ["Hallo, {name}! Willkommen zurück.", "Klicken Sie auf <b>Speichern</b>, um Ihre Änderungen zu behalten.", "Anmelden"],
    "fr": ["Bonjour, {name} ! Bon retour parmi nous.", "Cliquez sur <b>Enregistrer</b> pour conserver vos modifications.", "Se connecter"],
    "es": ["¡Hola, {name}! Bienvenido de nuevo.", "Haz clic en <b>Guardar</b> para conservar tus cambios.", "Iniciar sesión"],
    "it": ["Ciao, {name}! Bentornato.", "Fai clic su <b>Salva</b> per mantenere le modifiche.", "Accedi"],
    "pt": ["Olá, {name}! Bem-vindo de volta.", "Clique em <b>Salvar</b> para manter suas alterações.", "Entrar"],
    "ru": ["Привет, {name}! С возвращением.", "Нажмите <b>Сохранить</b>, чтобы сохранить изменения.", "Войти"],
    "zh": ["你好，{name}！欢迎回来。", "点击<b>保存</b>以保留您的更改。", "登录"],
    "ko": ["안녕하세요, {name}님! 다시 오신 것을 환영합니다.", "변경 사항을 유지하려면 <b>저장</b>을 클릭하세요.", "로그인"],
}


def name(code: str | None) -> str:
    """A language's English name; unknown codes (or names) pass through."""
    if not code:
        return "the source language"
    c = code.strip().lower().replace("_", "-")
    return NAMES.get(c) or NAMES.get(c.split("-")[0]) or code


def examples(code: str | None) -> list[str] | None:
    if not code:
        return None
    c = code.strip().lower().replace("_", "-")
    return EXAMPLES.get(c) or EXAMPLES.get(c.split("-")[0])


def label_names() -> list[str]:
    """Every language name a model may put before a translation: English and native."""
    return sorted(set(NAMES.values()) | set(NATIVE.values()), key=len, reverse=True)
