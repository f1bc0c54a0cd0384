"""What every type module builds on: the Struct base, the shared field types, the error answer.

A field type carries its rule (pattern, bounds) as `msgspec.Meta`, which is also what the
OpenAPI document says of it. A rule across fields ("together", "one of") is a Struct's
`extra_schema`, merged into its component by the document builder (api/document.py).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta

from ...ids import PREFIXES
from ...streaming.feed import MAX_CURSOR

STRUCTS: dict[str, type[Schema]] = {}  # every Struct by component name, for the document's post-processing


class Schema(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A request or response shape; `extra_schema` holds what JSON Schema says across its fields."""

    extra_schema: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        STRUCTS[cls.__name__] = cls


# §1.1: text is UTF-8 without NUL or lone surrogates; JSON may still write them as escapes.
TEXT_CHARS = r"[^\x00\ud800-\udfff]"
TEXT_PATTERN = f"^{TEXT_CHARS}*$"
# What a header or query value may hold and still be text: printable ASCII (latin-1 bytes alone are not UTF-8).
ASCII_PATTERN = "^[\\x20-\\x7e]*$"
TIMESTAMP_EXAMPLE = "2026-11-29T07:31:56.123Z"
EXAMPLE_IDS = {prefix: f"{prefix}_3x9TQm2ZkW8pLr4VbN7cYd" for prefix in PREFIXES}
# true/false (any case) or 1/0, as api/objects.py reads a flag.
FLAG_PATTERN = "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0)$"


def digits_up_to(limit: int) -> str:
    """A regex of the ASCII numbers 0 to `limit`, leading zeros allowed (as the server reads them)."""
    top = str(limit)
    shorter = [f"[0-9]{{1,{len(top) - 1}}}"] if len(top) > 1 else []
    same = [f"{top[:i]}[0-{int(digit) - 1}][0-9]{{{len(top) - i - 1}}}" for i, digit in enumerate(top) if digit != "0"]
    return f"0*({'|'.join([*shorter, *same, top])})"


# An event id, or empty: no cursor.
CURSOR_PATTERN = f"^({digits_up_to(MAX_CURSOR)})?$"


def text(min_length: int = 0, max_length: int | None = None, **extra: Any) -> Meta:
    """The Meta of a text field: no NUL, no lone surrogate, within the lengths."""
    return Meta(pattern=TEXT_PATTERN, min_length=min_length or None, max_length=max_length, **extra)


def id_of(prefix: str, description: str | None = None) -> Meta:
    """The Meta of a server-made id of one type (§1.4)."""
    return Meta(pattern=f"^{prefix}_[A-Za-z0-9]{{22}}$", examples=[EXAMPLE_IDS[prefix]], description=description)


Text = Annotated[str, text()]
ObjId = Annotated[str, id_of("obj")]
KeyId = Annotated[str, id_of("key")]
UserId = Annotated[str, id_of("usr")]
ApiKeyId = Annotated[str, id_of("ak")]
JobId = Annotated[str, id_of("job")]
Timestamp = Annotated[str, Meta(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$", examples=[TIMESTAMP_EXAMPLE])]
Hex = Annotated[str, Meta(pattern="^([0-9a-f]{2})*$", description="lowercase hex")]
B64Url = Annotated[str, Meta(pattern="^[A-Za-z0-9_-]+$", description="base64url DER, no padding")]
# Its patterns (hex or base64, by the encoding rule) are the body's: see data.CIPHERTEXT_ENCODINGS.
Binary = Annotated[str, Meta(description="hex, or base64 (standard or URL-safe, padding optional) (§1.7)")]
Count = Annotated[int, Meta(ge=0)]
Metadata = Annotated[
    dict[str, Any], Meta(description="any JSON object, at most 16 KiB as compact JSON, 32 levels deep")
]
# Unknown fields of a body are ignored, but their names (and strings: §1.1, said in the document's
# description, since generators cannot read a recursive JSON schema) must be text like the rest.
OPEN_TEXT = {"propertyNames": {"pattern": TEXT_PATTERN}}
MetadataIn = Annotated[
    dict[str, Any] | None,
    Meta(description="a JSON object (null: {}); 16 KiB at most (413)", extra_json_schema=OPEN_TEXT),
]
Encoding = Annotated[
    str | None, Meta(extra_json_schema={"enum": ["hex", "base64", None]}, description="overrides the rule of §1.7")
]
Name = Annotated[
    str,
    Meta(
        pattern=r"^\s*[A-Za-z0-9][A-Za-z0-9_-]{0,63}\s*$",
        description="trimmed and lowercased, then 1-64 of a-z 0-9 _ - (§1.5)",
        examples=["laptop"],
    ),
]
Flag = Annotated[str, Meta(pattern=FLAG_PATTERN, examples=["true"])]
Cursor = Annotated[str, Meta(pattern=CURSOR_PATTERN, description=f"an event id, 0 to {MAX_CURSOR}; empty: none")]


class Error(Schema):
    """Every non-2xx answer; some add fields (login's status, /readyz's checks)."""

    error: Annotated[str, Meta(pattern="^[a-z0-9][a-z0-9_]*$")]
    message: Annotated[str, Meta(min_length=1)]


def alias_rule(*groups: tuple[str, ...]) -> dict[str, Any]:
    """`extra_schema` of a body where each group's fields are aliases: one of them required, one at most sent.

    (The server takes two spellings that agree; that they must agree is what a schema cannot say.)
    """
    return {"allOf": [{"oneOf": [{"required": [name]} for name in group]} for group in groups]}


def body_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """`extra_schema` for a rule across a body's fields, written as `allOf: [{not: {not: rule}}]`.

    The same constraint as `rule` itself (JSON Schema's `not` of a `not`), but a code generator
    that models a body from its `properties` (openapi-python-client reads a top-level `anyOf`
    as the body's type and drops every field) leaves it alone; validators still apply it.
    """
    return {"allOf": [{"not": {"not": rule}}]}


def one_alias_at_most(*groups: tuple[str, ...]) -> dict[str, Any]:
    """`extra_schema` of a body where each group's fields are optional aliases, one at most sent."""
    pairs = [[a, b] for group in groups for i, a in enumerate(group) for b in group[i + 1 :]]
    return {"not": {"anyOf": [{"required": pair} for pair in pairs]}}
