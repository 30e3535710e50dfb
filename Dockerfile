# Triplock gateway image: a build stage that installs the package into a virtualenv, and a slim
# runtime stage that carries only that virtualenv. It runs as an unprivileged user and writes only
# under /var/lib/triplock (mount a volume there) and /tmp (a tmpfs), so the root filesystem can be
# read-only. The config is mounted at /etc/triplock/triplock.toml (see deploy/compose/ and
# deploy/kubernetes/); nothing secret is baked in: API keys, approver tokens and upstream
# credentials come from mounted files and environment variables at run time.
#
#   docker build -t triplock:local .
#   docker run --read-only --tmpfs /tmp -v triplock-state:/var/lib/triplock \
#     -v ./triplock.toml:/etc/triplock/triplock.toml:ro -p 127.0.0.1:8080:8080 triplock:local
#
# PYTHON_IMAGE names the base of both stages; any image with Python 3.11 at `python` and the
# `venv` module works (the default is Docker's official slim image).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/triplock
WORKDIR /src
# The package and what its metadata names (pyproject's readme); tests, load tests and docs stay out.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY policy ./policy
COPY adapters ./adapters
COPY demo_upstream ./demo_upstream
# pip compiles the modules to bytecode here: the runtime's read-only filesystem could not.
RUN /opt/triplock/bin/pip install . \
 && /opt/triplock/bin/pip uninstall -y pip setuptools \
 && /opt/triplock/bin/triplock --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric id, so Kubernetes' runAsNonRoot can verify it and volume ownership is predictable.
RUN groupadd --system --gid 10001 triplock \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/triplock --no-create-home \
      --shell /usr/sbin/nologin triplock \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/triplock /etc/triplock/keys \
 && install -d -m 0755 /usr/share/triplock
COPY --from=build /opt/triplock /opt/triplock
# The quickstart policy (the controlled preset without first-use holds), for the Compose demo.
COPY gateway/quickstart_policy.yaml /usr/share/triplock/quickstart-policy.yaml
ENV PATH=/opt/triplock/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Relative paths of the config (store.path, audit.path, auth.api_keys_file) land in the volume.
WORKDIR /var/lib/triplock
VOLUME ["/var/lib/triplock"]
USER 10001:10001
EXPOSE 8080
# /healthz is answered only for a Host the gateway accepts: list "127.0.0.1:8080" in
# server.allowed_hosts (deploy/compose/triplock.toml does), or point TRIPLOCK_HEALTHCHECK_URL elsewhere.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('TRIPLOCK_HEALTHCHECK_URL', 'http://127.0.0.1:8080/healthz'), timeout=2)"]
ENTRYPOINT ["triplock"]
CMD ["serve", "--config", "/etc/triplock/triplock.toml"]
