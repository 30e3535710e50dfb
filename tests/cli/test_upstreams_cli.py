"""``triplock upstreams status`` and ``triplock upstreams authorize NAME`` against a running gateway.

The gateway, its upstream and the upstream's authorization server are the real ones of
tests/identity/upstream_auth_server.py; the admin's browser is httpx following the printed URL's
redirects while the CLI waits for the sign-in to land.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.identity.upstream_auth_server import SignInGateway, running_signin_gateway
from tests.support import PY, REPO


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignInGateway]:
    with running_signin_gateway(tmp_path_factory.mktemp("upstreams-cli")) as gateway:
        yield gateway


def cli(gw: SignInGateway, *args: str) -> list[str]:
    return [PY, "-m", "gateway.cli", "upstreams", *args, "--url", gw.base]


def env(token: str) -> dict[str, str]:
    return {**os.environ, "TRIPLOCK_TOKEN": token}


def test_status_before_and_after_authorize(gw: SignInGateway) -> None:
    before = subprocess.run(cli(gw, "status"), cwd=REPO, env=env(gw.admin), capture_output=True, text=True,
                            timeout=60)
    assert (before.returncode, before.stdout) == (0, (
        "notes: needs sign-in; scopes -; token expires -\n"
        "  needs sign-in: an admin runs `triplock upstreams authorize notes` (or POST"
        " /api/upstreams/notes/authorize) and signs in\n"))

    proc = subprocess.Popen(cli(gw, "authorize", "notes", "--wait", "30"), cwd=REPO, env=env(gw.admin),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "Open this URL in a browser and sign in for upstream notes:\n"
        assert proc.stdout.readline() == "\n"
        url = proc.stdout.readline().strip()
        assert proc.stdout.readline() == "\n"
        assert url.startswith(gw.auth.url + "/authorize?response_type=code&")
        page = httpx.get(url, follow_redirects=True, timeout=20)  # the admin's browser
        assert page.status_code == 200 and "is connected" in page.text
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    expires = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(gw.status()["expires_at"]))
    assert (proc.returncode, out, err) == (0, (
        f"upstream notes: connected by ops-admin (scopes notes.read offline_access, token expires {expires})\n"), "")

    after = subprocess.run(cli(gw, "status"), cwd=REPO, env=env(gw.admin), capture_output=True, text=True,
                           timeout=60)
    assert (after.returncode, after.stdout) == (
        0, f"notes: connected; scopes notes.read offline_access; token expires {expires}; refreshable\n")
    for secret in (*gw.auth.issued, *gw.auth.refresh_tokens):
        assert secret not in after.stdout + out


def test_authorize_without_the_action_fails_with_the_reason(gw: SignInGateway) -> None:
    done = subprocess.run(cli(gw, "authorize", "notes", "--wait", "1"), cwd=REPO, env=env(gw.agent),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "principal 'agent-1' may not connect upstream" in done.stderr
