# syntax=docker/dockerfile:1
# The generator image, CPU variant: what the AWS Batch jobs on the CPU queue run, started by
# Dagster through Pipes (firepipe.resources.compute.BatchCompute). The job's command override is
# `python -m firepipe.services.generate` (compute.GENERATOR_COMMAND); the Pipes context and
# messages travel through S3 (boto3, the aws extra). No ENTRYPOINT: Batch's command would be
# handed to it as arguments. The GPU queue runs docker/generator-cuda.Dockerfile.
#   docker build -f docker/generator.Dockerfile .

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
    uv sync --frozen --no-dev --no-install-project --extra aws
COPY firepipe ./firepipe
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra aws
# The project's own modules compiled at build time too (uv compiles only the dependencies):
# otherwise every process of the image would compile them again as it starts.
RUN .venv/bin/python -m compileall -q firepipe

FROM ${PYTHON_IMAGE}
# libgomp1: the OpenMP runtime of LightGBM and of numba's threading layer (their wheels do not
# carry it). Not pinned: bookworm fixes its ABI, and an exact version would break the build as
# soon as a security update replaces it in the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/firepipe firepipe \
    && install -d -o firepipe -g firepipe /var/lib/firepipe
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    FIREPIPE_HOME=/var/lib/firepipe \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /app
CMD ["python", "-m", "firepipe.services.generate"]
