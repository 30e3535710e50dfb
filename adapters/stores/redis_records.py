"""Approvals as Redis hash fields and back, for `adapters.stores.redis_store.RedisStore`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.ports.records import PendingApproval


def approval_fields(a: PendingApproval) -> dict[str, str]:
    """An approval as Redis hash fields: None left out, lists as JSON, floats exact (repr)."""
    out: dict[str, str] = {}
    for k, v in a.to_dict().items():
        if v is None:
            continue
        out[k] = json.dumps(v) if isinstance(v, list) else repr(v) if isinstance(v, float) else str(v)
    out["_bind"] = a.binding  # the exact-call key (no session): ap:bind:<_bind>
    out["_tool"] = a.tool_binding  # the tool key a principal_tool scope is indexed under: ap:tool:<_tool>
    return out


def approval_from_fields(fields: Mapping[Any, Any] | list[Any]) -> PendingApproval | None:
    """Inverse of `approval_fields`; accepts HGETALL's dict or a script's flat [k, v, k, v] list."""
    data: dict[str, Any] = dict(zip(fields[::2], fields[1::2], strict=True)) if isinstance(fields, list) \
        else dict(fields)
    if not data:
        return None
    data.pop("_bind", None)
    data.pop("_tool", None)
    for k in ("rule_ids", "reasons"):
        data[k] = json.loads(data.get(k) or "[]")
    return PendingApproval.from_dict(data)


__all__ = ["approval_fields", "approval_from_fields"]
