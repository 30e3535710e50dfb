"""The ``triplock`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

from gateway.config import ConfigError, Settings, load_settings

log = logging.getLogger("triplock")

_GRACEFUL_SECONDS = 5.0  # on SIGTERM, requests in flight (SSE streams included) get this long


def _load(path: Path | None) -> Settings:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"triplock: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway on Triplock's own HTTP/1.1 server (adapters.http.server) or on uvicorn (server.runtime)."""
    from adapters.http import server as http_server
    from adapters.http import workers as http_workers
    from adapters.http.limits import Limits
    from adapters.http.uvicorn_runtime import run_uvicorn
    from gateway.app import build_gateway

    settings = _load(args.config)
    logging.basicConfig(
        level=settings.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.auth.mode == "none":
        log.warning("authentication is OFF (local development on %s only)", settings.server.host)
    if args.config is None:
        log.warning("no --config given: embedded defaults with the bundled demo upstream")
        if not os.environ.get(settings.approvals.approver_tokens_env):
            # The quickstart needs someone who can approve held calls: a one-off token for this run.
            token = secrets.token_urlsafe(18)
            os.environ[settings.approvals.approver_tokens_env] = f"quickstart={token}"
            log.warning("approver console: http://%s:%d/console  (token for this run: %s)",
                        settings.server.host, settings.server.port, token)
    srv = settings.server
    log.info("Triplock listening on http://%s:%d%s (%s server)", srv.host, srv.port, srv.path, srv.runtime)
    app = build_gateway(settings)
    if srv.workers > 1:
        if "{pid}" not in str(settings.audit.path) and "file" in settings.audit.sinks:
            print("triplock: audit.path: with server.workers > 1 it must contain {pid} (one hash chain per process)",
                  file=sys.stderr)
            return 2
        # Each worker process builds its own gateway from the same file (see gateway.app.app_from_env).
        os.environ["TRIPLOCK_CONFIG_FILE"] = str(args.config) if args.config else ""
    limits = Limits(
        header_timeout=srv.header_timeout_seconds,
        body_idle_timeout=srv.body_idle_timeout_seconds,
        body_timeout=srv.body_timeout_seconds,
        keepalive_timeout=srv.keepalive_timeout_seconds,
        max_connections=srv.max_connections,
        max_header_bytes=srv.max_header_bytes,
    )
    try:
        if srv.runtime == "uvicorn":
            run_uvicorn(app, factory_ref="gateway.app:app_from_env", host=srv.host, port=srv.port,
                        workers=srv.workers, limits=limits, graceful_timeout=_GRACEFUL_SECONDS,
                        log_level=srv.log_level)
        elif srv.workers > 1:
            return http_workers.supervise(
                "gateway.app:app_from_env",
                host=srv.host,
                port=srv.port,
                workers=srv.workers,
                factory=True,
                log_level=srv.log_level,
                limits=limits,
                graceful_timeout=_GRACEFUL_SECONDS,
            )
        else:
            http_server.run(app, host=srv.host, port=srv.port, limits=limits, graceful_timeout=_GRACEFUL_SECONDS)
    except http_server.LifespanFailure as exc:
        log.error("startup failed: %s", exc)
        return 1
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", srv.host, srv.port, exc)
        return 1
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate a config file without starting anything."""
    settings = _load(args.file)
    names = ", ".join(u.name for u in settings.upstreams) or "(none)"
    print(f"{args.file}: OK (upstreams: {names})")
    return 0


def cmd_demo_upstream(argv: list[str]) -> int:
    from demo_upstream.server import main as demo_main

    return demo_main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="triplock", description="MCP gateway that holds the lethal trifecta.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", type=Path, default=None, help="TOML config (default: embedded demo setup)")
    serve.set_defaults(func=cmd_serve)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_config_check)

    # Its own options are parsed by the demo server (see main()).
    sub.add_parser("demo-upstream", help="run the bundled demo MCP server (--transport stdio|http)")

    from gateway.cli import approvals, audit, codex_config, keys, pins, policy, state

    policy.register(sub)
    approvals.register(sub)
    keys.register(sub)
    audit.register(sub)
    codex_config.register(sub)
    pins.register(sub)
    state.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo-upstream"]:
        return cmd_demo_upstream(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
