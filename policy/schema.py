"""The JSON schema of the policy file, generated from the pydantic model.

`policy/schema.json` is this output, committed for editors and CI; a test keeps it current.
Regenerate with `triplock policy schema -o policy/schema.json`.
"""

from __future__ import annotations

import json
from typing import Any

from policy.config import PolicyFile

SCHEMA_ID = "https://triplock.dev/schemas/policy-v1.json"


def json_schema() -> dict[str, Any]:
    """The policy file's JSON schema (draft 2020-12) as a dict."""
    schema = PolicyFile.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def render_schema() -> str:
    """The schema as the exact text stored in policy/schema.json."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
