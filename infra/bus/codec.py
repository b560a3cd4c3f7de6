"""How events travel: JSON through msgspec, strictly typed on the way in.

The bus encodes whatever Struct it is given and decodes into the type a handler declares; it knows no contract
of its own (those are the domain's, `infra.domain.contracts`).
"""

from __future__ import annotations

from typing import Any

import msgspec

encode = msgspec.json.Encoder().encode


def decoder(kind: Any) -> msgspec.json.Decoder:
    """A strict decoder for one type (or a Union of tagged ones)."""
    return msgspec.json.Decoder(kind)
