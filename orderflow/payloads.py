"""A task type's payload: the seed's order (product_id, count, username), or one the type declares
when its handler registers (worker/handlers.py: a msgspec Struct or a JSON Schema).

How a declared payload reaches the ingest without its code: every worker writes a TypeRecord per
task type it serves into KV ORDER_TYPES at start (the JSON Schema, or none for the seed's order);
the ingest watches the bucket and checks each order of that type against the schema before it
stores it. The handler's code stays the one place a payload is written down, and a new image of
the workers is all a schema change takes (the ingest's image and values stay as they are).

Both sides check with JSON Schema (Draft 2020-12 unless the schema names another), with one
change: `integer` means a JSON number without a fraction part, as msgspec decodes it (JSON
Schema would take 1.0, which a Struct's `int` field refuses)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from orderflow import contract

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

# An answer names at most this many bad fields (a body of thousands of bad items stays small).
MAX_ERRORS = 20
# A declared schema is a KV value and part of /openapi.json: kept well below a KV value's size.
MAX_SCHEMA_BYTES = 64 * 1024
_MAX_MESSAGE = 200


class TypeRecord(msgspec.Struct, omit_defaults=True):
    """The value of KV ORDER_TYPES under a task type's name."""

    task_type: str
    # the payload's JSON Schema; None: the seed's order
    json_schema: dict[str, Any] | None = msgspec.field(default=None, name="schema")
    worker_id: str = ""
    declared_at: float = 0.0


_record_decoder = msgspec.json.Decoder(TypeRecord)
_json_any = msgspec.json.Decoder()
# Sorted keys: the stored payload of two equal bodies is the same bytes (Idempotency-Key compares it).
_sorted = msgspec.json.Encoder(order="sorted")


def encode_record(record: TypeRecord) -> bytes:
    return contract.encode(record)


def decode_record(data: bytes) -> TypeRecord:
    return _record_decoder.decode(data)


def _is_integer(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


class PayloadSchema:
    """One declared payload's JSON Schema, checked once and compiled once."""

    def __init__(self, task_type: str, schema: dict[str, Any]) -> None:
        if not isinstance(schema, dict):
            raise ValueError(f"payload of {task_type!r}: a JSON Schema is a JSON object")
        size = len(contract.encode(schema))
        if size > MAX_SCHEMA_BYTES:
            raise ValueError(f"payload of {task_type!r}: schema of {size} bytes, over {MAX_SCHEMA_BYTES}")
        # Imported here, on the first declared payload: a process whose types all take the seed's
        # order never loads jsonschema (nor carries its objects through every garbage collection).
        from jsonschema import exceptions as schema_errors
        from jsonschema import validators

        base = validators.validator_for(schema, default=validators.Draft202012Validator)
        try:
            base.check_schema(schema)
        except schema_errors.SchemaError as exc:
            raise ValueError(f"payload of {task_type!r}: not a valid JSON Schema: {exc.message}") from None
        checker = base.TYPE_CHECKER.redefine("integer", _is_integer)
        strict = validators.extend(base, type_checker=checker)  # type: ignore[no-untyped-call]
        self.task_type = task_type
        self.schema = schema
        self._validator: Validator = strict(schema)

    def errors(self, instance: Any) -> list[contract.FieldError]:
        """Every bad field of `instance`, by its dotted path (`lines.0.sku`), sorted, at most MAX_ERRORS."""
        found: dict[tuple[str, str], None] = {}
        try:
            for error in self._validator.iter_errors(instance):
                for field, message in _describe(error):
                    found[(field, message)] = None
        except RecursionError:  # a body of a thousand nested arrays, checked by a recursive schema
            return [contract.FieldError("body", "is nested too deeply")]
        return [contract.FieldError(f, m) for f, m in sorted(found)[:MAX_ERRORS]]

    def validate(self, body: bytes, order_id: str) -> contract.TypedOrder | list[contract.FieldError]:
        """Parse and check a POST /orders body of this type: the order, or every field error."""
        try:
            data = _json_any.decode(body)
        except (msgspec.DecodeError, RecursionError):  # msgspec raises RecursionError past ~1000 levels
            return [contract.FieldError("body", "must be a JSON object")]
        if not isinstance(data, dict):
            return [contract.FieldError("body", "must be a JSON object")]
        errors = self.errors(data)
        if errors:
            return errors
        return contract.TypedOrder(order_id, msgspec.Raw(_sorted.encode(data)), time.time())


def _path(parts: Iterable[Any]) -> str:
    # an empty key is a field too: named `""`, never an empty field name
    return ".".join(str(p) if p != "" else '""' for p in parts)


def _describe(error: ValidationError) -> list[tuple[str, str]]:
    """One jsonschema error as (field, message) pairs. The messages name the rule, never the
    value sent (which may be long, or not the client's to see again in a log)."""
    where = list(error.absolute_path)
    rule, instance = error.validator, error.instance
    value: Any = error.validator_value
    if rule == "required" and isinstance(instance, dict):
        return [(_path([*where, name]), "is required") for name in value if name not in instance]
    if rule in ("additionalProperties", "unevaluatedProperties") and isinstance(instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        known = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        extra = [k for k in instance if k not in known and not any(re.search(p, k) for p in patterns)]
        if extra:
            return [(_path([*where, k]), "is not an allowed field") for k in extra]
    field = _path(where) or "body"
    return [(field, _message(str(rule), value))]


_BOUNDS = {
    "minimum": "must be >= {}",
    "maximum": "must be <= {}",
    "exclusiveMinimum": "must be > {}",
    "exclusiveMaximum": "must be < {}",
    "minLength": "must be at least {} characters",
    "maxLength": "must be at most {} characters",
    "minItems": "must have at least {} items",
    "maxItems": "must have at most {} items",
    "minProperties": "must have at least {} fields",
    "maxProperties": "must have at most {} fields",
    "multipleOf": "must be a multiple of {}",
    "pattern": "must match the pattern {}",
}


def _message(rule: str, value: Any) -> str:
    if rule == "type":
        kinds = value if isinstance(value, list) else [value]
        return "must be of type " + " or ".join(str(k) for k in kinds)
    if rule in _BOUNDS:
        return _BOUNDS[rule].format(value)
    if rule == "enum" and isinstance(value, list):
        return _cut("must be one of: " + ", ".join(contract.encode(v).decode() for v in value))
    if rule == "const":
        return _cut(f"must be {contract.encode(value).decode()}")
    if rule in ("anyOf", "oneOf"):
        return "does not match any of the allowed forms" if rule == "anyOf" else "must match exactly one form"
    if rule == "format":
        return f"must be a {value}"
    return f"does not satisfy the schema's {rule!r} rule"


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
