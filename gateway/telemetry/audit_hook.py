"""Calling the audit hook the app hands to handlers (``audit(event_type, **fields)``, sync or async)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("triplock.audit")


async def call_audit(audit: Callable[..., Any] | None, event_type: str, **fields: Any) -> None:
    """Call ``audit(event_type, **fields)``, best effort.

    Whatever the caller did (a decision, a suspension, a sign-in) already stands, so a failing hook
    is logged, never raised; no hook (None) records nothing.
    """
    if audit is None:
        return
    try:
        result = audit(event_type, **fields)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("audit hook failed for %s", event_type)
