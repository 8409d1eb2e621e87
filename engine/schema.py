"""Structured output, the schema side: JSON schemas checked and rewritten into
what llguidance enforces, and generated JSON validated afterwards.

    schema, notes = prepare_schema(schema)   # raises InvalidRequest naming keyword and path
    validate_output(constraint, text)        # after generation: None or why not

Every rewrite keeps the set of accepted documents inside what the original
schema accepts (or equal to it); what cannot be enforced is rejected with the
keyword and its JSON path. docs/structured-output.md has the supported subset
and the JSONSchemaBench results.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .errors import InvalidRequest
from .types import Constraint

# Formats llguidance enforces.
_LLG_FORMATS = frozenset(
    "date-time time date duration email hostname ipv4 ipv6 uuid uri".split()
)


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


# Formats llguidance lacks, enforced by a pattern describing the format (or a
# subset of it). Other formats defined by JSON Schema 2020-12 are rejected;
# formats outside the standard are annotations (validators do not assert
# unknown formats), so they are dropped.
_FORMAT_PATTERNS = {
    "json-pointer": r"^(?:/(?:[^~/]|~[01])*)*$",
    "relative-json-pointer": r"^(?:0|[1-9][0-9]*)(?:#|(?:/(?:[^~/]|~[01])*)*)$",
    "uri-reference": _uri_reference(),
}
_STANDARD_FORMATS = _LLG_FORMATS | frozenset(
    "uri-reference iri iri-reference uri-template json-pointer relative-json-pointer"
    " regex idn-email idn-hostname".split()
)

# Why llguidance (and so llamaq) cannot enforce these while generating.
_IF = "conditional schemas (if/then/else) are not supported"
WHY = {
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
# Rejected wherever they are left after the rewrites (their no-op forms are dropped).
_NEVER = ("not", "contains", "uniqueItems", "if", "then", "else", "propertyNames",
          "unevaluatedProperties", "unevaluatedItems")

# Keywords whose values are subschemas (so a walk never descends into data
# such as const, enum, default or examples).
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = (
    "additionalProperties", "additionalItems", "not", "contains", "propertyNames",
    "if", "then", "else", "unevaluatedProperties", "unevaluatedItems",
)


def walk(node: Any, path: str = "#"):
    """(path, subschema) for node and every subschema under it."""
    yield path, node
    if not isinstance(node, dict):
        return
    for k in _SCHEMA_MAPS:
        if isinstance(node.get(k), dict):
            for name, sub in node[k].items():
                yield from walk(sub, f"{path}/{k}/{_ptr(name)}")
    for k in _SCHEMA_LISTS:
        if isinstance(node.get(k), list):
            for i, sub in enumerate(node[k]):
                yield from walk(sub, f"{path}/{k}/{i}")
    items = node.get("items")
    if isinstance(items, list):
        for i, sub in enumerate(items):
            yield from walk(sub, f"{path}/items/{i}")
    elif isinstance(items, (dict, bool)):
        yield from walk(items, f"{path}/items")
    for k in _SCHEMA_ONE:
        if isinstance(node.get(k), (dict, bool)):
            yield from walk(node[k], f"{path}/{k}")
    deps = node.get("dependencies")
    if isinstance(deps, dict):
        for name, sub in deps.items():
            if isinstance(sub, (dict, bool)):
                yield from walk(sub, f"{path}/dependencies/{_ptr(name)}")


def _ptr(name: str) -> str:
    return str(name).replace("~", "~0").replace("/", "~1")


def as_any_of(node: dict) -> None:
    """Read node's oneOf as anyOf (sound when its branches are exclusive)."""
    if "anyOf" in node:
        node.setdefault("allOf", []).append({"anyOf": node.pop("oneOf")})
    else:
        node["anyOf"] = node.pop("oneOf")


# ---------------------------------------------------------------- rewrites


def prepare_schema(schema: Any) -> tuple[dict, list[str]]:
    """Check schema and rewrite it for llguidance. Returns (rewritten copy,
    notes on what was rewritten). Raises InvalidRequest naming the keyword and
    its path for what cannot be enforced."""
    if schema is True or schema == {}:
        schema = {}
    if not isinstance(schema, dict):
        raise InvalidRequest("JSON schema must be an object", param="response_format")
    _check_schema(schema)
    rw = _Rewriter(copy.deepcopy(schema))
    for path, node in list(walk(rw.root)):
        if isinstance(node, dict):
            rw.rewrite(node, path)
    for node in rw.one_ofs:
        rw.inline_branch_refs(node)
    # The rewrites turn older drafts' idioms into 2020-12 ones (prefixItems, ...).
    rw.root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return rw.root, rw.notes


def _check_schema(schema: dict) -> None:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise InvalidRequest(
            f"invalid JSON schema at {_path(e.absolute_path)}: {e.message}", param="response_format"
        ) from None


def _path(parts) -> str:
    return "#" + "".join(f"/{_ptr(p)}" for p in parts)


def _unsupported(keyword: str, path: str, detail: str = "") -> InvalidRequest:
    return InvalidRequest(f'unsupported JSON schema keyword "{keyword}" at {path}: {detail}{WHY[keyword]}',
                          param="response_format")


class _Rewriter:
    def __init__(self, root: dict):
        self.root = root
        self.notes: list[str] = []
        self.one_ofs: list[dict] = []

    def rewrite(self, node: dict, path: str) -> None:
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            raise _unsupported("$ref", path, f"{ref!r} is not local; ")
        self._format(node, path)
        self._draft4_bounds(node)
        self._tuple_items(node)
        self._no_ops(node)
        for kw in _NEVER:
            if kw in node:
                raise _unsupported(kw, path)
        self._dependencies(node)
        if isinstance(node.get("oneOf"), list):
            if len(node["oneOf"]) == 1:  # one branch: oneOf == that branch
                as_any_of(node)
            else:
                self.one_ofs.append(node)

    def _format(self, node: dict, path: str) -> None:
        fmt = node.get("format")
        if not isinstance(fmt, str) or fmt in _LLG_FORMATS:
            return
        if fmt in _FORMAT_PATTERNS:
            del node["format"]
            pat = _FORMAT_PATTERNS[fmt]
            if "pattern" in node:
                node.setdefault("allOf", []).append({"pattern": pat})
            else:
                node["pattern"] = pat
        elif fmt in _STANDARD_FORMATS:
            supported = ", ".join(sorted(_LLG_FORMATS | set(_FORMAT_PATTERNS)))
            raise InvalidRequest(
                f'unsupported JSON schema format "{fmt}" at {path}/format: it cannot be '
                f"enforced while generating (supported: {supported})",
                param="response_format",
            )
        else:
            del node["format"]
            self.notes.append(f"{path}/format: non-standard format {fmt!r} is an annotation, not enforced")

    @staticmethod
    def _draft4_bounds(node: dict) -> None:
        # Draft 4: exclusiveMaximum/Minimum are booleans modifying maximum/minimum.
        for ex, bound in (("exclusiveMaximum", "maximum"), ("exclusiveMinimum", "minimum")):
            if isinstance(node.get(ex), bool):
                if node.pop(ex) and bound in node:
                    node[ex] = node.pop(bound)

    @staticmethod
    def _tuple_items(node: dict) -> None:
        # Drafts before 2020-12: "items": [...] is prefixItems, "additionalItems" is items.
        if isinstance(node.get("items"), list):
            node["prefixItems"] = node.pop("items")
            if "additionalItems" in node:
                node["items"] = node.pop("additionalItems")
        else:
            node.pop("additionalItems", None)  # ignored when items is not a list

    @staticmethod
    def _no_ops(node: dict) -> None:
        if node.get("uniqueItems") is False or (
            "uniqueItems" in node and isinstance(node.get("maxItems"), int) and node["maxItems"] <= 1
        ):
            del node["uniqueItems"]
        if "contains" not in node:
            node.pop("minContains", None)
            node.pop("maxContains", None)
        if "if" in node and "then" not in node and "else" not in node:
            del node["if"]
        for k in ("then", "else"):
            if k in node and "if" not in node:
                del node[k]

    @staticmethod
    def _dependencies(node: dict) -> None:
        """dependencies / dependentRequired / dependentSchemas as an exact anyOf:
        either the trigger property is absent, or it is present with what it needs."""
        clauses = []
        for kw in ("dependencies", "dependentRequired", "dependentSchemas"):
            deps = node.get(kw)
            if not isinstance(deps, dict):
                continue
            del node[kw]
            for prop, need in deps.items():
                absent = {"properties": {prop: False}}
                if isinstance(need, list):
                    present = {"required": [prop, *need]}
                elif need is True:
                    continue
                else:
                    present = {"allOf": [{"required": [prop]}, need]}
                clauses.append({"anyOf": [absent, present]})
        if clauses:
            node.setdefault("allOf", []).extend(clauses)

    def inline_branch_refs(self, node: dict) -> None:
        """oneOf branches that are a bare local $ref become (a copy of) their
        target, so that llguidance's own proof that the branches are exclusive
        (by type, or by a discriminating property) sees what they are."""
        for i, branch in enumerate(node["oneOf"]):
            for _ in range(8):  # follow a short chain of bare refs
                if not (isinstance(branch, dict) and branch.keys() == {"$ref"} and branch["$ref"].startswith("#")):
                    break
                target = _pointer(self.root, branch["$ref"][1:])
                if not isinstance(target, dict):
                    break
                branch = dict(target)
            node["oneOf"][i] = branch


def _pointer(root: Any, ptr: str) -> Any:
    node = root
    for part in ptr.split("/")[1:] if ptr else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


# ---------------------------------------------------------------- validation


def validate_output(c: Constraint, text: str) -> str | None:
    """None if text is a complete document satisfying c; else why not. JSON kinds
    are parsed and validated with jsonschema (formats it can check included);
    grammars are checked by the engine's matcher, so only JSON is checked here."""
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
    import jsonschema

    schema = c.value
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        err = jsonschema.exceptions.best_match(
            cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(doc)
        )
    except RecursionError:
        return "output is nested too deeply to validate"
    if err is None:
        return None
    return f"output does not match the schema at {_path(err.absolute_path)}: {err.message}"
