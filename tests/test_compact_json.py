"""runstate._json.compact: the stdlib's compact encoding, without its per-call set-up."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runstate._json import compact

_REFERENCE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


@pytest.mark.parametrize(
    "value",
    [
        {"n": 1, "pad": "x" * 64},
        'quote " backslash \\ newline \n tab \t nul \x00 é ß \u2028 \ud7ff',
        "",
        0,
        -(2**63),
        10**40,
        1.5,
        -0.0,
        1e300,
        5e-324,
        None,
        True,
        False,
        [],
        {},
        [1, [2, [3, {"a": [None, {"": ""}]}]]],
        {"ü": {"deep": [True, 2.25, "x"]}, "k": None},
    ],
)
def test_the_text_is_the_standard_compact_encoding(value: Any) -> None:
    assert compact(value) == _REFERENCE.encode(value)
    assert json.loads(compact(value)) == value


@pytest.mark.parametrize("value", [float("nan"), {"a": float("inf")}, [float("-inf")]])
def test_nan_and_infinity_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        compact(value)


@pytest.mark.parametrize("value", [object(), {"a": {1, 2}}, [b"bytes"]])
def test_values_json_has_no_form_for_are_refused(value: Any) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        compact(value)
