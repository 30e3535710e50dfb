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


def _refuse(where: Path | None, errors: list[str]) -> int:
    """Print every configuration error (no traceback) and return the exit code for a bad config."""
    print(f"triplock: {where or 'embedded defaults'}: invalid configuration", file=sys.stderr)
    for line in errors:
        print(f"  {line}", file=sys.stderr)
    return 2


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway on Triplock's own HTTP/1.1 server (adapters.http.server) or on uvicorn (server.runtime)."""
    from adapters.http import server as http_server
    from adapters.http import workers as http_workers
    from adapters.http.limits import Limits
    from adapters.http.uvicorn_runtime import run_uvicorn
    from gateway.app import build_gateway
    from gateway.cli.config_checks import check_settings
    from policy import PolicyError

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
    # The same checks as `triplock config check`: a config error stops here, named, without a traceback.
    findings = check_settings(settings)
    if findings.errors:
        return _refuse(args.config, findings.errors)
    for warning in findings.warnings:
        log.warning("%s", warning)
    srv = settings.server
    # "listening" is logged by the HTTP server once the socket is bound (adapters.http).
    log.info("starting Triplock: MCP endpoint http://%s:%d%s (%s server)", srv.host, srv.port, srv.path, srv.runtime)
    try:
        # With several workers each one builds its own gateway; this process only supervises them.
        app = build_gateway(settings) if srv.workers == 1 else None
    except (ConfigError, PolicyError, ValueError, OSError) as exc:
        return _refuse(args.config, [str(exc)])
    if srv.workers > 1:
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
            # The supervisor replaces this process (same pid, so signals and process managers still
            # reach it) and starts with none of the gateway's modules: it stays small.
            sys.stdout.flush()
            sys.stderr.flush()
            argv = http_workers.supervisor_argv(
                "gateway.app:app_from_env", host=srv.host, port=srv.port, workers=srv.workers, factory=True,
                log_level=srv.log_level, limits=limits, graceful_timeout=_GRACEFUL_SECONDS,
            )
            os.execv(argv[0], argv)
        else:
            assert app is not None  # one process: built above
            http_server.run(app, host=srv.host, port=srv.port, limits=limits, graceful_timeout=_GRACEFUL_SECONDS)
    except http_server.LifespanFailure as exc:
        # The app's startup reports a traceback as its message; the operator needs its last line
        # (the exception), the traceback only at debug level.
        lines = str(exc).strip().splitlines() or ["(no message)"]
        log.error("startup failed: %s", lines[-1])
        log.debug("startup failure in full:\n%s", exc)
        return 1
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", srv.host, srv.port, exc)
        return 1
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Make every check ``serve`` makes (the file, the environment it names, the policy, the files it
    writes) without starting anything: 0 when serve would start, 2 (and each problem) when not."""
    from gateway.cli.config_checks import check_settings

    settings = _load(args.file)
    findings = check_settings(settings)
    for warning in findings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if findings.errors:
        return _refuse(args.file, findings.errors)
    names = ", ".join(u.name for u in settings.upstreams) or "(none)"
    print(f"{args.file}: OK (upstreams: {names})")
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    """Print the configuration reference (Markdown) generated from the settings models."""
    from gateway.cli.config_reference import render_reference

    sys.stdout.write(render_reference())
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
    reference = config_sub.add_parser("reference", help="print the configuration reference (docs/config.md)")
    reference.set_defaults(func=cmd_config_reference)

    # Its own options are parsed by the demo server (see main()).
    sub.add_parser("demo-upstream", help="run the bundled demo MCP server (--transport stdio|http)")

    from gateway.cli import approvals, audit, codex_config, keys, pins, policy, preflight, state, upstreams

    preflight.register(sub)
    policy.register(sub)
    approvals.register(sub)
    keys.register(sub)
    audit.register(sub)
    codex_config.register(sub)
    pins.register(sub)
    state.register(sub)
    upstreams.register(sub)
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
