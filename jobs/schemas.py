"""The OpenAI request bodies llamaq reads, as pydantic models: the one
definition that both checks a body (kinds.validate) and documents it in the
API's /openapi.json, so whatever the published schema accepts is accepted.

Only the fields llamaq reads are described; other fields are allowed and
ignored, as OpenAI's clients send many. Limits (OpenAI's where it has them)
bound the work one request can ask for."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError, WithJsonSchema

from .errors import JobValidationError

MAX_STOP = 4  # OpenAI's limit on stop sequences
MAX_STOP_CHARS = 256
MAX_PROMPT_CHARS = 1 << 20  # one prompt, message content or input text (characters, as JSON Schema counts)
MAX_INPUTS = 2048  # OpenAI's limit on embedding inputs
MAX_PROMPTS = 64  # prompts or translation inputs per request: each is a sequence of its own
MAX_CHOICES = 16  # `n`, choices per prompt, each a sequence of its own (OpenAI allows 128)
MAX_MESSAGES = 1024
MAX_TOKEN_IDS = 1 << 17  # a prompt given as token ids
MAX_TOKEN_ID = 262143  # the default model's (Gemma 3) vocabulary; other models check their own
MAX_INT = 2**31 - 1  # counts llama.cpp takes as a C int
INT64 = 2**63


def _integral(v: Any) -> Any:
    """JSON Schema counts 2.0 as an integer: so do we, where the float is exact
    (JSON integers past 64 bits arrive as floats, rounded onto the bounds)."""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) <= 2**53 else v


def Int(lo: int | None = None, hi: int | None = None) -> Any:  # noqa: N802 (a type alias with bounds)
    return Annotated[int, Field(ge=lo, le=hi, strict=True), BeforeValidator(_integral)]


def Num(lo: float | None = None, hi: float | None = None, gt: float | None = None) -> Any:  # noqa: N802
    return Annotated[float, Strict(), Field(ge=lo, le=hi, gt=gt)]


Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Text = Annotated[str, Strict(), Field(max_length=MAX_PROMPT_CHARS)]
NonEmptyText = Annotated[str, Strict(), Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
TokenIds = Annotated[list[Int(0, MAX_TOKEN_ID)], Field(min_length=1, max_length=MAX_TOKEN_IDS)]
Seed = Int(-INT64, INT64 - 1)
StopString = Annotated[str, Strict(), Field(max_length=MAX_STOP_CHARS)]

_LOGIT_BIAS_KEY = r"^(0|[1-9][0-9]{0,8})$"
LogitBias = Annotated[
    dict[Annotated[str, Field(pattern=_LOGIT_BIAS_KEY)], Num(-100, 100)],
    Field(max_length=1024),
    WithJsonSchema({"type": "object", "maxProperties": 1024, "propertyNames": {"pattern": _LOGIT_BIAS_KEY},
                    "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
                    "description": "token id -> bias; ids outside the model's vocabulary are ignored"}),
]
MAX_SCHEMA_DEPTH = 64  # objects and arrays in a schema, nested (the job record's JSON writer stops at 254)


def _shallow(schema: dict) -> dict:
    stack = [(schema, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise ValueError(f"the schema nests more than {MAX_SCHEMA_DEPTH} objects and arrays deep")
        children = v.values() if isinstance(v, dict) else v
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return schema


# A JSON Schema for structured output, as an object (the engine reports what it cannot compile).
SchemaObject = Annotated[dict[str, Any], AfterValidator(_shallow)]


class Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False)


class StreamOptions(Body):
    include_usage: Bool | None = None


class TextFormat(Body):
    type: Literal["text"]


class JsonObjectFormat(Body):
    type: Literal["json_object"]


class JsonSchemaSpec(Body):
    name: Str | None = None
    schema_: SchemaObject = Field(default_factory=dict, alias="schema")
    strict: Bool | None = None
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class JsonSchemaFormat(Body):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]
Stop = StopString | Annotated[list[StopString], Field(max_length=MAX_STOP)]


CONSTRAINTS = ("response_format", "json_schema", "grammar")


def _one_constraint(body: Any) -> Any:
    """At most one of the three, by presence (as the schema's "not" says)."""
    given = [k for k in CONSTRAINTS if isinstance(body, dict) and k in body]
    if len(given) > 1:
        raise JobValidationError(f"give only one of {', '.join(CONSTRAINTS)}; got {' and '.join(given)}", given[-1])
    return body


_ONE_CONSTRAINT = {"not": {"anyOf": [{"required": [a, b]} for i, a in enumerate(CONSTRAINTS)
                                     for b in CONSTRAINTS[i + 1:]]}}


def _false_only(v: bool) -> bool:
    if v:
        raise ValueError("not supported")
    return v


NotSupported = Annotated[Bool, AfterValidator(_false_only), WithJsonSchema({"const": False})]


class Sampling(Body):
    """Fields shared by chat and completions (the llama.cpp ones are extensions)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_ONE_CONSTRAINT)

    model: Str | None = None
    max_tokens: Int(1, MAX_INT) | None = Field(None, description="clamped to the room left in the context")
    temperature: Num(0, 2) | None = None
    top_p: Num(hi=1, gt=0) | None = None
    top_k: Int(0, MAX_INT) | None = None
    min_p: Num(0, 1) | None = None
    repeat_penalty: Num(hi=10, gt=0) | None = None
    presence_penalty: Num(-2, 2) | None = None
    frequency_penalty: Num(-2, 2) | None = None
    seed: Seed | None = None
    stop: Stop | None = Field(None, description=f"up to {MAX_STOP} strings of up to {MAX_STOP_CHARS} characters")
    logit_bias: LogitBias | None = None
    n: Int(1, MAX_CHOICES) | None = Field(None, description="choices per prompt, each a sequence of its own")
    top_logprobs: Int(0, 0) | None = Field(None, description="logprobs are not supported")
    stream: Bool | None = None
    stream_options: StreamOptions | None = None
    cache_prompt: Bool | None = None
    response_format: ResponseFormat | None = None
    json_schema: SchemaObject | None = Field(
        None, description="llamaq: constrain the output to this JSON Schema (one the engine cannot compile: 400)")
    grammar: Str | None = Field(
        None, description="llamaq: constrain the output to this GBNF grammar (one that does not parse: 400)")
    user: Str | None = None


class TextPart(Body):
    type: Literal["text"]
    text: Text


class Message(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | Annotated[list[TextPart], Field(max_length=MAX_MESSAGES)] | None = None


class ChatRequest(Sampling):
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_completion_tokens: Int(1, MAX_INT) | None = None
    logprobs: NotSupported | None = Field(None, description="logprobs are not supported")
    tools: Annotated[list[Any], Field(max_length=0)] | None = Field(None, description="tools are not supported")


class CompletionRequest(Sampling):
    prompt: (NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1, max_length=MAX_PROMPTS)]
             | TokenIds | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)])
    echo: Bool | None = None
    best_of: Int(1, 1) | None = Field(None, description="only 1 is supported")
    suffix: Annotated[str, Strict(), Field(max_length=0)] | None = Field(None, description="not supported")
    logprobs: Int(0, 0) | None = Field(None, description="logprobs are not supported")


class EmbeddingRequest(Body):
    input: (NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1, max_length=MAX_INPUTS)]
            | TokenIds | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_INPUTS)])
    model: Str | None = None
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Int(1, MAX_INT) | None = Field(
        None, description="shorter vectors are truncated and renormalised; at least the model's size gives it whole")
    user: Str | None = None


class TranslationRequest(Body):
    """llamaq's extension: translate text (or a list of texts) into target_language."""

    input: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_PROMPTS)]
    target_language: Annotated[str, Strict(), Field(min_length=1, max_length=64)]
    source_language: Annotated[str, Strict(), Field(max_length=64)] | None = None
    glossary: Annotated[dict[str, Str], Field(max_length=1024)] | None = None
    model: Str | None = None
    max_tokens: Int(1, MAX_INT) | None = None
    temperature: Num(0, 2) | None = None
    seed: Seed | None = None


REQUESTS: dict[str, type[Body]] = {
    "chat": ChatRequest,
    "completion": CompletionRequest,
    "embedding": EmbeddingRequest,
    "translation": TranslationRequest,
}


def parse(kind: str, body: Any) -> Body:
    """body checked against its kind's model; JobValidationError naming the field."""
    if kind in ("chat", "completion"):
        _one_constraint(body)
    return check(REQUESTS[kind], body)


def check(model: type[BaseModel], data: Any) -> Any:
    """data validated by model; JobValidationError naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise _job_error(e) from None


MAX_REASONS = 5  # a message lists this many of a value's problems
_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "[key]"}
_FORMAT_TAGS = {"text", "json_object", "json_schema"}


def _path(err: dict) -> list[str]:
    """The body path of an error, pydantic's union and key tags dropped."""
    out: list[str] = []
    loc = err["loc"]
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out.append(str(part))
        elif (i and loc[i - 1] == "response_format" and part in _FORMAT_TAGS) or part.startswith("/"):
            continue  # a discriminated union's tag
        elif part not in _TYPE_TAGS and "[" not in part and "-" not in part:
            out.append(part)
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        out.append(err["ctx"]["discriminator"].strip("'"))
    return out


def _job_error(e: ValidationError) -> JobValidationError:
    """The error of the deepest failing branch: for a union, the form the value
    came closest to; where branches tie, their common path and each reason."""
    errs = e.errors(include_url=False)
    paths = [_path(err) for err in errs]
    too_long = [(p, err) for p, err in zip(paths, errs) if err["type"] == "too_long"]
    if too_long and all(err["type"] == "too_long" or err["type"].endswith("_type") for err in errs):
        # a list over its limit, whose items are only of another branch's type (strings, not token ids)
        paths, errs = [p for p, _ in too_long], [err for _, err in too_long]
    depth = max(map(len, paths))
    deepest = [(p, err) for p, err in zip(paths, errs) if len(p) == depth]
    if len(deepest) == 1:
        path, err = deepest[0]
        where = ".".join(path)
        if err["type"] == "missing":
            return JobValidationError(f"'{where}' is required", where)
        return JobValidationError(f"'{where}': {err['msg']}" if where else err["msg"], where or None)
    common = deepest[0][0]
    for p, _ in deepest[1:]:
        n = 0
        while n < min(len(common), len(p)) and common[n] == p[n]:
            n += 1
        common = common[:n]
    param = ".".join(common)
    reasons = list(dict.fromkeys(
        f"{'.'.join(p[len(common):])}: {err['msg']}" if len(p) > len(common) else err["msg"] for p, err in deepest))
    if len(reasons) > MAX_REASONS:
        reasons[MAX_REASONS:] = [f"and {len(reasons) - MAX_REASONS} more"]
    return JobValidationError(f"'{param}' is not valid: {'; '.join(reasons)}", param or None)
