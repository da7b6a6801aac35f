# syntax=docker/dockerfile:1.7
# One image for every coderoom process: `coderoom api` (default), `coderoom gateway`,
# `coderoom seed /app/seeds/blocks.yaml`. Build: docker build -t coderoom .
#
# Stages: builder (uv + the locked virtualenv), dev (builder + a writable /app for
# Tilt's live_update; build with --target dev), runtime (the default, last stage:
# python:3.13-slim with the virtualenv and the sources, no uv, no compilers).

ARG PYTHON_IMAGE=python:3.13-slim

FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /app
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock .python-version README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY shared/ shared/
COPY services/ services/
COPY seeds/ seeds/
# The project itself (editable: the venv points at /app, where the sources live).
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev \
    && python -m compileall -q shared services


FROM builder AS dev
# Tilt syncs changed files into /app and may re-run `uv sync` as the app user.
RUN groupadd --system --gid 10001 coderoom \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /tmp --shell /usr/sbin/nologin coderoom \
    && chown -R 10001:10001 /app
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_CACHE_DIR=/tmp/uv-cache \
    HOST=0.0.0.0
USER 10001:10001
EXPOSE 8000 8001
ENTRYPOINT ["coderoom"]
CMD ["api"]


FROM python:3.13-slim AS runtime
LABEL org.opencontainers.image.title="coderoom" \
      org.opencontainers.image.description="coderoom api, websocket gateway and seeder"
RUN groupadd --system --gid 10001 coderoom \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin coderoom
# Root-owned and read-only for the app user; the pod mounts an emptyDir on /tmp
# and sets readOnlyRootFilesystem. Nothing is written at run time, not even .pyc.
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0
WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
COPY --from=builder /app/pyproject.toml /app/
COPY --from=builder /app/shared /app/shared
COPY --from=builder /app/services /app/services
COPY --from=builder /app/seeds /app/seeds
USER 10001:10001
# api on 8000, gateway on 8001 (PORT); probes: /healthz, /readyz (Kubernetes).
EXPOSE 8000 8001
ENTRYPOINT ["coderoom"]
CMD ["api"]
