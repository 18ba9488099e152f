"""Compact JSON text, the one encoding runstate writes: stored payloads, batches, envelopes.

``json.JSONEncoder.encode`` builds a new C encoder object on every call, which costs more
than encoding a small payload; writes encode three to five small values each. ``compact``
keeps one C encoder and calls it directly, with the settings of
``JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False)``
and so the same text. Without a circular check: every value it is given is either the
validation's depth-capped copy of caller input (``_validation``) or built by runstate itself,
so none holds a cycle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _stdlib_encoder
from typing import Any

__all__ = ["compact"]

_reference = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False
)


def _make_compact() -> Callable[[Any], str]:
    make_c_encoder = getattr(_stdlib_encoder, "c_make_encoder", None)
    if make_c_encoder is None:  # an interpreter without the C accelerator
        return _reference.encode
    encode_chunks = make_c_encoder(
        None,  # markers: no circular check
        _reference.default,
        _stdlib_encoder.encode_basestring,
        None,  # indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )
    join = "".join
    encode_string = _stdlib_encoder.encode_basestring

    def compact(value: Any) -> str:
        """``value`` as compact JSON text (non-ASCII kept, NaN and Infinity refused)."""
        if type(value) is str:
            # The C encoder's chunks would be the bare string: JSONEncoder quotes it itself.
            return encode_string(value)
        return join(encode_chunks(value, 0))

    return compact


compact = _make_compact()
