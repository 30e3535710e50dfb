"""policy/ stays pure: no asyncio, network or web framework imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

POLICY_DIR = Path(__file__).parents[2] / "policy"
FORBIDDEN = {
    "asyncio",
    "socket",
    "http",
    "urllib.request",
    "httpx",
    "requests",
    "starlette",
    "uvicorn",
    "redis",
    "anyio",
    "mcp",
    "gateway",
    "adapters",
    "subprocess",
    "threading",
}


def test_no_forbidden_imports_in_source() -> None:
    for path in POLICY_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), f"{path.name}: {name}"


def test_importing_policy_does_not_load_asyncio() -> None:
    code = "import sys, policy; policy.load_preset('controlled'); print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
