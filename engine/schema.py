"""JSON schemas for llguidance: checked, rewritten into what it enforces and
compiled to its grammar; generated JSON validated afterwards.

    schema, notes = prepare_schema(schema)   # raises InvalidRequest naming keyword and path
    grammar = json_grammar(schema)           # llguidance grammar; unsupported(schema, error) if it fails
    validate_output(constraint, text)        # after generation: None or why not

Every rewrite keeps the accepted documents inside what the original schema
accepts. docs/structured-output.md has the supported subset."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
from llguidance import LLMatcher
from referencing.jsonschema import DRAFT202012

from .errors import InvalidRequest
from .types import Constraint

_LLG_FORMATS = frozenset("date-time time date duration email hostname ipv4 ipv6 uuid uri".split())


def _uri_reference() -> str:
    """RFC 3986 URI-reference, without bracketed IP-literal hosts (a subset: sound)."""
    pct = r"%[0-9A-Fa-f]{2}"
    pchar = rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|{pct})"
    pchar_nc = rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=@]|{pct})"
    authority = (
        rf"(?:(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|{pct})*@)?"
        rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|{pct})*(?::[0-9]*)?"
    )
    abempty = rf"(?:/{pchar}*)*"
    absolute = rf"/(?:{pchar}+(?:/{pchar}*)*)?"
    rootless = rf"{pchar}+(?:/{pchar}*)*"
    noscheme = rf"{pchar_nc}+(?:/{pchar}*)*"
    tail = rf"(?:\?(?:{pchar}|[/?])*)?(?:#(?:{pchar}|[/?])*)?"
    uri = rf"[A-Za-z][A-Za-z0-9+.\-]*:(?://{authority}{abempty}|{absolute}|{rootless})?{tail}"
    relative = rf"(?://{authority}{abempty}|{absolute}|{noscheme})?{tail}"
    return rf"^(?:{uri}|{relative})$"


# Formats llguidance lacks, enforced by a pattern of (a subset of) the format.
# Other standard formats are rejected; non-standard ones are annotations
# (validators do not assert unknown formats), so they are dropped.
_FORMAT_PATTERNS = {
    "json-pointer": r"^(?:/(?:[^~/]|~[01])*)*$",
    "relative-json-pointer": r"^(?:0|[1-9][0-9]*)(?:#|(?:/(?:[^~/]|~[01])*)*)$",
    "uri-reference": _uri_reference(),
}
_STANDARD_FORMATS = _LLG_FORMATS | {"uri-reference", "iri", "iri-reference", "uri-template", "json-pointer",
                                    "relative-json-pointer", "regex", "idn-email", "idn-hostname"}

# Why llguidance (and so llamaq) cannot enforce these while generating.
_IF = "conditional schemas (if/then/else) are not supported"
_WHY = {
    "not": "negation cannot be enforced token by token",
    "contains": "array 'contains' cannot be enforced token by token",
    "uniqueItems": "uniqueness of array items cannot be enforced token by token",
    "if": _IF, "then": _IF, "else": _IF,
    "propertyNames": "'propertyNames' is not supported",
    "unevaluatedProperties": "'unevaluatedProperties' is not supported",
    "unevaluatedItems": "'unevaluatedItems' is not supported",
    "oneOf": "'oneOf' branches that may overlap cannot be enforced "
    "(exactly one must match); use anyOf if overlap is acceptable",
    "$ref": "only local references (#/...) are supported",
}
_NEVER = [k for k in _WHY if k not in ("oneOf", "$ref")]  # rejected wherever the rewrites leave them

# Keywords whose values are subschemas, in the order walk visits them (a walk
# never descends into data such as const, enum, default or examples).
_SUBSCHEMAS = ("properties patternProperties $defs definitions dependentSchemas allOf anyOf oneOf prefixItems items "
               "additionalProperties additionalItems not contains propertyNames if then else unevaluatedProperties "
               "unevaluatedItems dependencies").split()
_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"}
_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems", "items"}


def walk(node: Any, path: str = "#"):
    """(path, subschema) for node and every subschema under it."""
    yield path, node
    if not isinstance(node, dict):
        return
    for k in _SUBSCHEMAS:
        sub = node.get(k)
        if k in _MAPS and isinstance(sub, dict):
            for name, s in sub.items():
                if isinstance(s, (dict, bool)):  # dependencies: lists of names too
                    yield from walk(s, f"{path}/{k}/{_ptr(name)}")
        elif k in _LISTS and isinstance(sub, list):
            for i, s in enumerate(sub):
                yield from walk(s, f"{path}/{k}/{i}")
        elif k not in _MAPS and isinstance(sub, (dict, bool)):
            yield from walk(sub, f"{path}/{k}")


def _ptr(name: Any) -> str:
    return str(name).replace("~", "~0").replace("/", "~1")


def _unsupported(keyword: str, path: str, detail: str = "") -> InvalidRequest:
    return InvalidRequest(f'unsupported JSON schema keyword "{keyword}" at {path}: {detail}{_WHY[keyword]}',
                          param="response_format")


def _validator(schema: Any) -> type[jsonschema.protocols.Validator]:
    return jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)


# ---------------------------------------------------------------- rewrites


def prepare_schema(schema: Any) -> tuple[dict, list[str]]:
    """Check schema and rewrite it for llguidance. Returns (rewritten copy, notes
    on what was rewritten). Raises InvalidRequest naming the keyword and its
    path for what cannot be enforced."""
    if schema is True:
        schema = {}
    if not isinstance(schema, dict):
        raise InvalidRequest("JSON schema must be an object", param="response_format")
    cls = _validator(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise InvalidRequest(f"invalid JSON schema at {_path(e.absolute_path)}: {e.message}",
                             param="response_format") from None
    root, notes = copy.deepcopy(schema), []
    for path, node in list(walk(root)):
        if isinstance(node, dict):
            _rewrite(node, path, notes)
    # Bare local $ref branches become (a copy of) their target, so that
    # llguidance's proof that the branches are exclusive sees what they are.
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema"  # llguidance fetches unknown ones
    resolver = referencing.Registry().resolver_with_root(DRAFT202012.create_resource(root))
    for _, node in list(walk(root)):
        if isinstance(node, dict) and isinstance(node.get("oneOf"), list):
            node["oneOf"] = [_deref(resolver, branch) for branch in node["oneOf"]]
    return root, notes


def _rewrite(node: dict, path: str, notes: list[str]) -> None:
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        raise _unsupported("$ref", path, f"{ref!r} is not local; ")
    _format(node, path, notes)
    for ex, bound in (("exclusiveMaximum", "maximum"), ("exclusiveMinimum", "minimum")):
        if isinstance(node.get(ex), bool) and node.pop(ex) and bound in node:  # draft 4: a flag on the bound
            node[ex] = node.pop(bound)
    # No-ops llguidance would refuse.
    if node.get("uniqueItems") is False or ("uniqueItems" in node and isinstance(node.get("maxItems"), int)
                                            and node["maxItems"] <= 1):
        del node["uniqueItems"]
    if "contains" not in node:
        node.pop("minContains", None)
        node.pop("maxContains", None)
    if "if" in node and "then" not in node and "else" not in node:
        del node["if"]
    for k in ("then", "else"):
        if k in node and "if" not in node:
            del node[k]
    for kw in _NEVER:
        if kw in node:
            raise _unsupported(kw, path)
    _dependencies(node)


def _format(node: dict, path: str, notes: list[str]) -> None:
    fmt = node.get("format")
    if not isinstance(fmt, str) or fmt in _LLG_FORMATS:
        return
    if fmt in _STANDARD_FORMATS and fmt not in _FORMAT_PATTERNS:
        supported = ", ".join(sorted(_LLG_FORMATS | set(_FORMAT_PATTERNS)))
        raise InvalidRequest(f'unsupported JSON schema format "{fmt}" at {path}/format: it cannot be '
                             f"enforced while generating (supported: {supported})", param="response_format")
    del node["format"]
    if fmt not in _FORMAT_PATTERNS:
        notes.append(f"{path}/format: non-standard format {fmt!r} is an annotation, not enforced")
    elif "pattern" in node:
        node.setdefault("allOf", []).append({"pattern": _FORMAT_PATTERNS[fmt]})
    else:
        node["pattern"] = _FORMAT_PATTERNS[fmt]


def _dependencies(node: dict) -> None:
    """dependencies / dependentRequired / dependentSchemas as an exact anyOf:
    either the trigger property is absent, or it is present with what it needs."""
    clauses = []
    for kw in ("dependencies", "dependentRequired", "dependentSchemas"):
        deps = node.pop(kw, None)
        for prop, need in deps.items() if isinstance(deps, dict) else ():
            present = {"required": [prop, *need]} if isinstance(need, list) else {"allOf": [{"required": [prop]}, need]}
            if need is not True:
                clauses.append({"anyOf": [{"properties": {prop: False}}, present]})
    if clauses:
        node.setdefault("allOf", []).extend(clauses)


def _deref(resolver: referencing.Resolver, branch: Any) -> Any:
    for _ in range(8):  # follow a short chain of bare refs
        if not (isinstance(branch, dict) and branch.keys() == {"$ref"} and branch["$ref"].startswith("#")):
            break
        try:
            target = resolver.lookup(branch["$ref"]).contents
        except referencing.exceptions.Unresolvable:
            break
        if not isinstance(target, dict):
            break
        branch = dict(target)
    return branch


# ---------------------------------------------------------------- compiling


def json_grammar(schema: dict, coerce_one_of: bool = False) -> str:
    """llguidance grammar for a prepared schema; compact output (no whitespace
    between tokens, as json.dumps(separators=(",", ":")))."""
    return LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False},
                                              overrides={"lenient": False, "coerce_one_of": coerce_one_of})


def unsupported(schema: dict, error: str) -> InvalidRequest:
    """Why llguidance could not compile a prepared schema, found by asking it
    again (its errors are text): a oneOf it cannot prove exclusive, or an
    unsupported pattern; else its own message."""
    if _compiles(schema, coerce_one_of=True):
        return _unsupported("oneOf", _failing_one_of(schema))
    for path, node in walk(schema):
        pattern = node.get("pattern") if isinstance(node, dict) else None
        err = isinstance(pattern, str) and LLMatcher.validate_grammar(LLMatcher.grammar_from_regex(pattern))
        if err:
            return InvalidRequest(f"unsupported pattern at {path}/pattern: {tidy(err)} (lookarounds and "
                                  "backreferences are not supported)", param="response_format")
    return InvalidRequest(f"unsupported JSON schema: {tidy(error)}", param="response_format")


def _compiles(schema: dict, coerce_one_of: bool = False) -> bool:
    return not LLMatcher.validate_grammar_with_warnings(json_grammar(schema, coerce_one_of))[0]


def _failing_one_of(schema: dict) -> str:
    """Path of the first oneOf that fails to compile with every other oneOf read as anyOf."""
    paths = [p for p, node in walk(schema) if isinstance(node, dict) and "oneOf" in node]
    for path in paths:
        trial = copy.deepcopy(schema)
        for p, node in list(walk(trial)):
            if p != path and isinstance(node, dict) and "oneOf" in node:
                node.setdefault("allOf", []).append({"anyOf": node.pop("oneOf")})
        if not _compiles(trial):
            return path
    return paths[0] if paths else "#"


def tidy(msg: str) -> str:
    """The first lines of a library's error message, on one line."""
    lines = [ln.strip() for ln in msg.strip().splitlines() if ln.strip()]
    return "; ".join(lines[:3])[:500] or "unknown error"


# ---------------------------------------------------------------- validation


def validate_output(c: Constraint, text: str) -> str | None:
    """None if text is a complete document satisfying c; else why not. JSON kinds
    are parsed and validated with jsonschema (formats included); grammars are
    checked by the engine's matcher, so only JSON is checked here."""
    if c.kind not in ("json_object", "json_schema"):
        return None
    try:
        doc = json.loads(text)
    except ValueError as e:
        return f"output is not valid JSON: {e}"
    except RecursionError:
        return "output is nested too deeply to parse"
    if c.kind == "json_object":
        return None if isinstance(doc, dict) else "output is not a JSON object"
    cls = _validator(c.value)
    try:
        err = jsonschema.exceptions.best_match(cls(c.value, format_checker=cls.FORMAT_CHECKER).iter_errors(doc))
    except RecursionError:
        return "output is nested too deeply to validate"
    return None if err is None else f"output does not match the schema at {_path(err.absolute_path)}: {err.message}"


def _path(parts) -> str:
    return "#" + "".join(f"/{_ptr(p)}" for p in parts)
