"""_validation.checked_json_copy: the private copy of caller JSON, and its size bound."""

from __future__ import annotations

from typing import Any

import pytest

from runstate._json import compact
from runstate._validation import checked_json_copy
from runstate.errors import InvalidInput


@pytest.mark.parametrize(
    "value",
    [
        {"queue": "q"},
        {"a": "", "b": "é" * 50, "c": "\U0001d11e" * 10, "d": "line\nbreak", "e": '"\\'},
        {"k\u2028": "\x01\x1f", "n": 12, "f": -0.5, "t": True, "z": None},
        {"nested": {"flat": "x" * 300, "list": ["a\tb", 1, {"deep": "y"}]}},
        {"": {"": ""}},
    ],
)
def test_the_copy_is_equal_and_new_and_the_bound_covers_its_encoding(value: Any) -> None:
    copy, bound = checked_json_copy(value, "payload")
    assert copy == value
    assert copy is not value
    # The bound caps the stored size (UTF-8 of the compact text) without encoding it.
    assert bound >= len(compact(copy).encode("utf-8"))


@pytest.mark.parametrize(
    "value",
    [
        {"flat": "nul \x00 inside"},
        {"flat": "lone \ud800 surrogate"},
        {"key \x00": "v"},
        {"key \udfff": "v"},
        {"nested": ["\x00"]},
    ],
)
def test_nul_and_lone_surrogates_are_refused_in_keys_and_values(value: Any) -> None:
    with pytest.raises(InvalidInput, match="NUL or lone surrogates"):
        checked_json_copy(value, "payload")


def test_a_copied_flat_member_is_the_same_string_not_a_copy_of_it() -> None:
    # Strings are immutable: sharing them is safe, and the copy then costs no more than a dict.
    text = "shared " * 10
    copy, _ = checked_json_copy({"s": text}, "payload")
    assert isinstance(copy, dict)
    assert copy["s"] is text
