"""The order schema (README, How it works; /openapi.json), as a table: what the seed's clients send must pass, nothing else."""

from __future__ import annotations

import json

import msgspec
import pytest

from orderflow import contract, validation

VALID = [
    ({"product_id": "33", "count": "3", "username": "maksim.konovalov"}, (33, 3)),  # the seed sends strings
    ({"product_id": 33, "count": 3, "username": "m"}, (33, 3)),
    ({"product_id": 0, "count": "100", "username": "m"}, (0, 100)),
    ({"product_id": "0", "count": 100, "username": "x" * 64, "extra": "ignored"}, (0, 100)),
    (
        {
            "product_id": 1,
            "count": 1,
            "username": "Ma\u00efa \u041c\u0430\u043a\u0441\u0438\u043c \u0645\u062d\u0645\u062f \U0001f600",
        },
        (1, 1),
    ),
]

INVALID = [
    ({"product_id": 101, "count": 1, "username": "m"}, "product_id"),
    ({"product_id": -1, "count": 1, "username": "m"}, "product_id"),
    ({"product_id": "101", "count": 1, "username": "m"}, "product_id"),
    ({"product_id": 1, "count": "3.5", "username": "m"}, "count"),
    ({"product_id": 1, "count": 3.5, "username": "m"}, "count"),
    ({"product_id": 1, "count": "", "username": "m"}, "count"),
    ({"product_id": None, "count": 1, "username": "m"}, "product_id"),
    ({"product_id": True, "count": 1, "username": "m"}, "product_id"),
    ({"product_id": 1, "count": False, "username": "m"}, "count"),
    ({"count": 1, "username": "m"}, "product_id"),
    ({"product_id": 1, "username": "m"}, "count"),
    ({"product_id": 1, "count": 1}, "username"),
    ({"product_id": 1, "count": 1, "username": ""}, "username"),
    ({"product_id": 1, "count": 1, "username": "x" * 65}, "username"),
    ({"product_id": 1, "count": 1, "username": 7}, "username"),
    ({"product_id": " 3", "count": 1, "username": "m"}, "product_id"),
    ({"product_id": "5\n", "count": 1, "username": "m"}, "product_id"),
]
# NUL, CR/LF, TAB, ESC, DEL, C1 (NEL, CSI), the line separator, the bidi marks, overrides and isolates
CONTROLS = ["\x00", "\r\n", "\t", "\x1b[31m", "\x7f", "\x85", "\x9b", "\u2028", "\u200f", "\u061c"]
CONTROLS += [chr(c) for c in range(0x202A, 0x202F)] + [chr(c) for c in range(0x2066, 0x206A)]


@pytest.mark.parametrize(("body", "expected"), VALID)
def test_valid_orders_are_normalised_to_integers(body: dict[str, object], expected: tuple[int, int]) -> None:
    order = validation.validate_order(json.dumps(body).encode(), "id-1")
    assert isinstance(order, contract.Order)
    assert (order.product_id, order.count) == expected
    assert order.order_id == "id-1"


@pytest.mark.parametrize(("body", "field"), INVALID)
def test_invalid_orders_name_the_field(body: dict[str, object], field: str) -> None:
    errors = validation.validate_order(json.dumps(body).encode(), "id-1")
    assert isinstance(errors, list)
    assert [e.field for e in errors] == [field]
    assert errors[0].message


@pytest.mark.parametrize("control", CONTROLS)
def test_a_username_with_a_control_or_bidi_character_is_invalid(control: str) -> None:
    errors = validation.validate_order(
        json.dumps({"product_id": 1, "count": 1, "username": f"ma{control}ksim"}).encode(), "id-1"
    )
    assert isinstance(errors, list) and [e.field for e in errors] == ["username"]
    assert f"U+{ord(control[0]):04X} at 2" in errors[0].message


@pytest.mark.parametrize("raw", [b"[1, 2]", b"not json", b"", b'"a string"', b"{", b"null", b"42"])
def test_a_body_that_is_not_a_json_object_is_invalid(raw: bytes) -> None:
    errors = validation.validate_order(raw, "id-1")
    assert isinstance(errors, list)
    assert errors[0].field == "body"


def test_every_bad_field_is_reported_at_once() -> None:
    errors = validation.validate_order(b'{"product_id": 500, "count": null}', "id-1")
    assert isinstance(errors, list)
    assert {e.field for e in errors} == {"product_id", "count", "username"}


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("abc-1", True),
        ("a.b_c=d", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("a..b", False),
        (".a", False),
        ("a b", False),
        ("a*", False),
        ("a>", False),
        ("ü", False),
    ],
)
def test_keys_and_order_ids_are_safe_as_kv_keys_and_subject_tokens(value: str, ok: bool) -> None:
    assert contract.valid_key(value) is ok
    assert contract.valid_order_id(value) is (ok or value == "x" * 129)  # ids: up to 132 (key-<key>)
    if ok:  # and the order it names
        assert contract.valid_order_id(contract.keyed_order_id(value))


def test_a_keyed_order_id_is_never_a_generated_one() -> None:
    """Generated ids are 32 hex characters (ingest/ids.py); every keyed id holds a '-'."""
    from ingest.ids import IdSource

    new_id = IdSource()
    generated = [new_id() for _ in range(1000)]
    assert all("-" not in g and contract.valid_order_id(g) for g in generated)
    assert all(contract.keyed_order_id(g) != g and "-" in contract.keyed_order_id(g) for g in generated)
    assert contract.valid_order_id(contract.keyed_order_id("x" * 128))


def test_stored_orders_round_trip_and_poison_is_rejected() -> None:
    order = contract.Order("id-1", 1, 2, "m", 1.0)
    assert contract.decode_order(contract.encode(order)) == order
    for poison in (b"{}", b"garbage", b'{"order_id":"x","product_id":500,"count":1,"username":"m"}'):
        with pytest.raises(msgspec.MsgspecError):
            contract.decode_order(poison)


def test_deeply_nested_json_is_invalid_not_a_crash() -> None:
    # msgspec raises RecursionError past ~1000 levels; found by the hypothesis fuzz (tests/fuzz).
    errors = validation.validate_order(b"[" * 5000 + b"]" * 5000, "id-1")
    assert isinstance(errors, list) and errors[0].field == "body"
