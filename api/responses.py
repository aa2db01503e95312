"""A Starlette response that encodes msgspec Structs; it overrides render() only."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from api.envelopes import ENCODER


class MsgspecResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return ENCODER.encode(content)
