"""The JSON response the service sends: orjson, which also writes numpy arrays (as their own dtype)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class JSONBytesResponse(JSONResponse):
    """A JSON response rendered by orjson; float32 arrays keep their shortest float32 spelling."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
