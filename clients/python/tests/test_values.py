"""The value conventions (``docs/PROTOCOL.md``, "Value conventions"), without a server: what
each Python value is stored as, and that it reads back as itself."""

from __future__ import annotations

import math
from typing import Any

import pytest

from zatt.errors import ConfigError, ZattError
from zatt.values import decode_key, decode_value, encode_key, encode_value


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("world", b"world"),
        ("", b""),
        ("two words", b"two words"),
        ("[draft", b"[draft"),
        ("true story", b"true story"),
        ("h\u00e9llo \u2603", "h\u00e9llo \u2603".encode()),
        # Strings that are themselves JSON are quoted so they stay strings.
        ("4", b'"4"'),
        ("true", b'"true"'),
        ("null", b'"null"'),
        ("[1]", b'"[1]"'),
        (' "x" ', b'" \\"x\\" "'),
        # JSON values are compact JSON.
        (4, b"4"),
        (-17, b"-17"),
        (2.5, b"2.5"),
        (True, b"true"),
        (False, b"false"),
        (None, b"null"),
        ([1, "a", None], b'[1,"a",null]'),
        ({"a": {"b": [True]}}, b'{"a":{"b":[true]}}'),
        ({"\u00e9": "\u2603"}, '{"\u00e9":"\u2603"}'.encode()),
        # Bytes are stored exactly.
        (b"\xff\x00raw", b"\xff\x00raw"),
        (b"4", b"4"),
    ],
)
def test_what_each_value_is_stored_as(value: Any, stored: bytes) -> None:
    assert encode_value(value) == stored


@pytest.mark.parametrize(
    "value",
    [
        "world",
        "",
        "4",
        "4.0",
        "true",
        "null",
        '"quoted"',
        "  [1, 2]  ",
        "1e400",
        "NaN",
        "Infinity",
        "{not json",
        4,
        0,
        2**70,
        -0.5,
        1e300,
        True,
        None,
        [1, [2, [3, {"x": None}]]],
        {"k": "v", "n": 1.25},
        b"\xff\xfe",
    ],
)
def test_every_value_reads_back_as_itself(value: Any) -> None:
    got = decode_value(encode_value(value))
    assert got == value
    assert type(got) is type(value)


def test_what_other_clients_store_reads_by_the_conventions() -> None:
    # As `zatt put KEY VALUE` or the Rust client would store them.
    assert decode_value(b"hello") == "hello"
    assert decode_value(b"5") == 5
    assert decode_value(b" true\n") is True
    assert decode_value(b'{"debug": true}') == {"debug": True}
    assert decode_value(b'"5"') == "5"
    assert decode_value(b"5 apples") == "5 apples"
    assert decode_value(b"NaN") == "NaN"
    assert decode_value(b"1e400") == "1e400"
    assert decode_value(b"\xc3\x28") == b"\xc3\x28"
    # Bytes that are UTF-8 come back as the str they spell.
    assert decode_value(encode_value(b"hi")) == "hi"


def test_tuples_come_back_as_lists_as_json_has_no_tuple() -> None:
    assert decode_value(encode_value((1, 2))) == [1, 2]


def test_values_json_cannot_carry_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(TypeError):
        encode_value({1, 2})
    with pytest.raises(TypeError):
        encode_value(object())
    with pytest.raises(TypeError):
        encode_value({"k": b"bytes inside JSON"})
    for bad in (math.nan, math.inf, [math.nan]):
        with pytest.raises(ConfigError) as e:
            encode_value(bad)
        assert isinstance(e.value, ValueError)
        assert isinstance(e.value, ZattError)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ConfigError):
        encode_value(loop)
    with pytest.raises(ConfigError):
        encode_value("\ud800")


def test_keys_are_utf8_or_bytes() -> None:
    assert encode_key("h\u00e9") == "h\u00e9".encode()
    assert encode_key(b"\xff") == b"\xff"
    assert decode_key(b"abc") == "abc"
    assert decode_key(b"\xff") == b"\xff"
    with pytest.raises(TypeError):
        encode_key(4)  # type: ignore[arg-type]
