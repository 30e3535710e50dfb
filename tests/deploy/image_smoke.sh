#!/usr/bin/env bash
# Build the Triplock image and run it as compose.yaml does: read-only root, non-root, state on a
# volume, the demo upstream in a second container sharing the gateway's network namespace. Then
# check /readyz, an MCP initialize with an API key, the user id and the read-only root.
#
# Not part of .ci/run: with no container registry reachable, the official python:3.11-slim base
# cannot be pulled, and building a stand-in (Debian's python3.11 via debootstrap) plus the image
# takes about 5 minutes. Usage: tests/deploy/image_smoke.sh   (as root; podman or docker)
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINE="${ENGINE:-$(command -v podman || command -v docker || true)}"
[ -n "$ENGINE" ] || { echo "image_smoke: no podman or docker" >&2; exit 2; }
PORT="${PORT:-18990}"
WORK="$(mktemp -d)"
RUN=("$ENGINE")
BUILD_OPTS=()
if [ "$(basename "$ENGINE")" = podman ]; then
  # crun refuses cgroup v1/v2 hybrid hosts and some sandboxes forbid raising RLIMIT_NPROC: runc, with limits
  # at or below the host's, works there.
  command -v runc >/dev/null && RUN+=(--runtime runc)
  LIMITS=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
  BUILD_OPTS+=(--format docker "${LIMITS[@]}")
else
  LIMITS=()
fi
# Where pip needs the machine's own settings (a CA bundle for an intercepting proxy), hand them to the build.
if [ -f /etc/pip.conf ]; then
  BUILD_OPTS+=(-v /etc/pip.conf:/etc/pip.conf:ro -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
cleanup() {
  "${RUN[@]}" rm -f -v triplock-smoke-demo >/dev/null 2>&1 || true
  "${RUN[@]}" rm -f -v triplock-smoke >/dev/null 2>&1 || true
  "${RUN[@]}" volume rm -f triplock-smoke-state >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

BASE=python:3.11-slim
if ! "${RUN[@]}" image inspect "$BASE" >/dev/null 2>&1 && ! timeout 60 "${RUN[@]}" pull -q "$BASE" >/dev/null 2>&1; then
  BASE=localhost/triplock-base:python3.11
  if ! "${RUN[@]}" image inspect "$BASE" >/dev/null 2>&1; then
    echo "image_smoke: $ENGINE cannot pull python:3.11-slim; building a stand-in from Debian packages" >&2
    command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
    debootstrap --variant=minbase \
      --include=python3.11,python3.11-venv,python3-distutils,python3-pip-whl,python3-setuptools-whl,ca-certificates \
      bookworm "$WORK/rootfs" >"$WORK/debootstrap.log"
    ln -sf /usr/bin/python3.11 "$WORK/rootfs/usr/local/bin/python"
    tar -C "$WORK/rootfs" -c . | "${RUN[@]}" import - "$BASE" >/dev/null
  fi
fi
"${RUN[@]}" build "${BUILD_OPTS[@]}" --build-arg "PYTHON_IMAGE=$BASE" -t localhost/triplock:local . >"$WORK/build.log" \
  || { tail -30 "$WORK/build.log" >&2; exit 1; }

mkdir -p "$WORK/keys"
KEY="$(.venv/bin/triplock keys create --principal smoke --groups agents-run --file "$WORK/keys/keys.json" 2>/dev/null)"
chown -R 10001:10001 "$WORK/keys"
cat >"$WORK/triplock.toml" <<EOF
[server]
host = "0.0.0.0"
port = 8080
allowed_hosts = ["127.0.0.1:8080", "127.0.0.1:$PORT"]
[auth]
mode = "api_key"
api_keys_file = "/etc/triplock/keys/keys.json"
[store]
kind = "sqlite"
path = "/var/lib/triplock/state.sqlite"
[[upstreams]]
name = "demo"
transport = "http"
url = "http://127.0.0.1:9000/mcp"
EOF
SECURE=(--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges "${LIMITS[@]}")
"${RUN[@]}" run -d --name triplock-smoke "${SECURE[@]}" -v triplock-smoke-state:/var/lib/triplock \
  -v "$WORK/triplock.toml:/etc/triplock/triplock.toml:ro" -v "$WORK/keys:/etc/triplock/keys:ro" \
  -p "127.0.0.1:$PORT:8080" localhost/triplock:local >/dev/null
"${RUN[@]}" run -d --name triplock-smoke-demo "${SECURE[@]}" --network container:triplock-smoke \
  localhost/triplock:local demo-upstream --transport http --host 127.0.0.1 --port 9000 >/dev/null

status=000
for _ in $(seq 1 120); do  # poll readiness (the demo upstream joins within a few seconds)
  status="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz" || true)"
  [ "$status" = 200 ] && break
  sleep 0.5
done
[ "$status" = 200 ] || { "${RUN[@]}" logs triplock-smoke >&2; echo "image_smoke: /readyz $status" >&2; exit 1; }
init='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"smoke","version":"1"}}}'
headers="$(curl -s -o /dev/null -D - -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
  -H 'accept: application/json, text/event-stream' "http://127.0.0.1:$PORT/mcp" -d "$init")"
grep -qi '^mcp-session-id: ' <<<"$headers" || { echo "image_smoke: initialize got no session: $headers" >&2; exit 1; }
[ "$("${RUN[@]}" exec triplock-smoke id -u)" = 10001 ] || { echo "image_smoke: not running as 10001" >&2; exit 1; }
if "${RUN[@]}" exec triplock-smoke python -c "open('/opt/triplock/x', 'w')" 2>/dev/null; then
  echo "image_smoke: the root filesystem is writable" >&2; exit 1
fi
"${RUN[@]}" exec triplock-smoke python -c \
  "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"  # the HEALTHCHECK
echo "image_smoke: ok ($ENGINE, base $BASE): ready, MCP session opened with an API key, uid 10001, read-only root"
