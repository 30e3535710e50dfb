"""A do-nothing OTLP/HTTP receiver for the telemetry-on benchmark: answers every POST with 200.

Run: ``python -m load_tests.otlp_sink PORT``. An empty body is a valid (empty) protobuf
``Export*ServiceResponse``, so exporters count every batch as delivered.
"""

from __future__ import annotations

import sys
from typing import Any

_HEADERS = [(b"content-type", b"application/x-protobuf")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Drain the request body and answer 200 (405 for anything but POST)."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    status = 200 if scope["method"] == "POST" else 405
    await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b""})


def main() -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
