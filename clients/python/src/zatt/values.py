"""The value conventions: how Python values map to the bytes the cluster stores.

The server stores bytes and gives them no meaning. The :class:`~zatt.client.DistributedDict`
(like the original Zatt, whose users stored JSON) maps values through one convention,
``docs/PROTOCOL.md`` ("Value conventions") being its specification:

* a stored value that is UTF-8 and, as a whole, a JSON text (RFC 8259; no ``NaN`` or
  ``Infinity``, no number that overflows a double) stands for that JSON value: ``4``,
  ``[1,2]``, ``{"a":true}``, ``null``, ``"quoted"``;
* any other UTF-8 value is a plain string;
* anything else is raw bytes.

Writing follows from it: ``str`` values are stored as their plain UTF-8, except a string that
is itself a JSON text (``"4"``, ``"true"``, ``"[1]"``), which is stored as a JSON string
literal (quoted) so that it reads back as the same string; ``int``, ``float``, ``bool``,
``None``, ``list``/``tuple`` and ``dict`` are stored as compact JSON; ``bytes`` are stored
exactly as given (and read back per the rules above, so ``b'hi'`` reads back ``'hi'``).

Owns only this mapping; must not do I/O.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import ConfigError

__all__ = ["decode_key", "decode_value", "encode_key", "encode_value"]

_JSON_START = frozenset('{["-0123456789tfn')
_WHITESPACE = " \t\n\r"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    f = float(text)
    if math.isinf(f):
        raise ValueError("number overflows a double")
    return f


def _parse_json(text: str) -> tuple[bool, Any]:
    """``(True, value)`` when ``text`` as a whole is a JSON text, else ``(False, None)``."""
    stripped = text.lstrip(_WHITESPACE)
    if not stripped or stripped[0] not in _JSON_START:
        return False, None
    try:
        return True, json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        # ValueError covers json.JSONDecodeError and integers over Python's digit limit.
        return False, None


def encode_value(value: Any) -> bytes:
    """The bytes stored for ``value`` (see the module's conventions). Raises ``TypeError`` for
    a type the conventions do not carry and :class:`~zatt.errors.ConfigError` (a
    ``ValueError``) for content JSON cannot carry (``nan``, a circular reference)."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False) if _parse_json(value)[0] else value
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ConfigError(f"string value is not valid Unicode text: {e}") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8")
    except TypeError as e:
        raise TypeError(
            f"cannot store a {type(value).__name__}: values are str, bytes, or what JSON "
            f"carries (int, float, bool, None, list, tuple, dict with str keys): {e}"
        ) from None
    except (ValueError, RecursionError) as e:
        # NaN or infinity, a circular reference, a lone surrogate, nesting too deep.
        raise ConfigError(f"cannot store this {type(value).__name__} as JSON: {e}") from None


def decode_value(data: bytes) -> Any:
    """The Python value the stored bytes ``data`` stand for."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(data)
    ok, value = _parse_json(text)
    return value if ok else text


def encode_key(key: str | bytes) -> bytes:
    """Keys are bytes on the wire; ``str`` keys travel as UTF-8."""
    if isinstance(key, str):
        try:
            return key.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ConfigError(f"key is not valid Unicode text: {e}") from None
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"keys are str or bytes, not {type(key).__name__}")


def decode_key(data: bytes) -> str | bytes:
    """A stored key as ``str`` when it is UTF-8, else as ``bytes``."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(data)
