# syntax=docker/dockerfile:1
# The EMR Serverless application's image: EMR's own Spark runtime with Python 3.11 and firepipe,
# which the gold features' entry point (firepipe/services/spark_features.py) imports. EMR 7
# ships Python 3.9; the job runs FIREPIPE_EMR_PYTHON, /usr/local/bin/python3.11, here the
# firepipe environment's interpreter. pyspark is not installed into it (no spark extra): Spark
# puts the runtime's own pyspark, matching its JVM, on the path of every Python it starts.
# EMR Serverless runs the image as its `hadoop` user and starts Spark itself: no CMD.
#   docker build -f docker/emr-serverless.Dockerfile .

# AWS publishes EMR Serverless base images under the release's `latest` tag only (EMR
# Serverless user guide, "Customizing an EMR Serverless image"); the release is pinned, and the
# application's EMR_RELEASE (infra/firepipe_infra/spark.py) must match it.
ARG EMR_IMAGE=public.ecr.aws/emr-serverless/spark/emr-7.5.0:latest
# The uv the Makefile pins (UV_VERSION): the same resolver reads the same uv.lock.
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# hadolint ignore=DL3007
FROM ${EMR_IMAGE} AS build
# The build stage installs as root (the base image runs as hadoop); the image itself does not.
# hadolint ignore=DL3002
USER root
# Amazon Linux 2023's Python 3.11. Not pinned: the distribution fixes its ABI, and an exact
# version would break the build as soon as an update replaces it in the repository.
# hadolint ignore=DL3041
RUN dnf install -y python3.11 && dnf clean all
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/firepipe
WORKDIR /build
# Dependencies alone first: their layer is rebuilt when the lock changes, not with the code.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --no-editable
COPY firepipe ./firepipe
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# hadolint ignore=DL3007
FROM ${EMR_IMAGE}
USER root
# hadolint ignore=DL3041
RUN dnf install -y python3.11 && dnf clean all
COPY --from=build /opt/firepipe /opt/firepipe
# FIREPIPE_EMR_PYTHON: a wrapper, not a link, so that Python finds the environment it runs.
RUN printf '#!/bin/sh\nexec /opt/firepipe/bin/python "$@"\n' > /usr/local/bin/python3.11 \
    && chmod 755 /usr/local/bin/python3.11
USER hadoop:hadoop
