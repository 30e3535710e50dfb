"""The HTTP server's tests run on both event loops it may meet."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import uvloop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], Any]]:
    # `triplock serve` runs on uvloop; flow control and transport details differ from the stdlib loop.
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
