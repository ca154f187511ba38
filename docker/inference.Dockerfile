# syntax=docker/dockerfile:1
# The inference image: a SageMaker real-time endpoint's (and batch transform's) container.
# SageMaker starts it as `docker run IMAGE serve`; `serve` is firepipe's console script
# (firepipe.services.inference.server:sagemaker_main, in pyproject's [project.scripts]): one
# uvicorn worker on port 8080 or SAGEMAKER_BIND_TO_PORT, the model from /opt/ml/model, /ping and
# /invocations. Base dependencies only: the endpoint reads its model from the folder SageMaker
# fills, and IAM authenticates callers (no API keys, no Secrets Manager).
#   docker build -f docker/inference.Dockerfile .
# The compiled trees (tl2cgen) exported at registration load here: built on the same Debian
# release by the Dagster image.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# The uv the Makefile pins (UV_VERSION): the same resolver reads the same uv.lock.
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies alone first: their layer is rebuilt when the lock changes, not with the code.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY firepipe ./firepipe
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev
# The project's own modules compiled at build time too (uv compiles only the dependencies):
# otherwise every process of the image would compile them again as it starts.
RUN .venv/bin/python -m compileall -q firepipe

FROM ${PYTHON_IMAGE}
# libgomp1: LightGBM's OpenMP runtime (its wheel does not carry it), for the native fallback.
# Not pinned: bookworm fixes its ABI, and an exact version would break the build as soon as a
# security update replaces it in the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/firepipe firepipe
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1
# The service only reads /opt/ml/model (and writes temporary files under /tmp).
USER 10001:10001
WORKDIR /app
EXPOSE 8080
CMD ["serve"]
