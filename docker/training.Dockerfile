# syntax=docker/dockerfile:1
# The training image: what SageMaker training and tuning jobs run
# (firepipe.resources.training.SageMakerTrainingBackend, image_uri). SageMaker starts it as
# `docker run IMAGE train`; `train` (docker/bin/train) runs
# `python -m firepipe.services.sagemaker_training`, which reads /opt/ml: input/config/
# hyperparameters.json, input/data/{train,validation}/, and writes model/ (and output/failure).
# The jobs carry no source code, so no SageMaker toolkit is needed; base dependencies only (the
# job's channels and model reach S3 through SageMaker, not through boto3).
#   docker build -f docker/training.Dockerfile .

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
# libgomp1: LightGBM's OpenMP runtime (its wheel does not carry it). Not pinned: bookworm fixes
# its ABI, and an exact version would break the build as soon as a security update replaces it
# in the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /app /app
# --chmod: the mode does not depend on how the checkout kept the file.
COPY --chmod=755 docker/bin/train /usr/local/bin/train
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1
WORKDIR /app
# Root, unlike the other images: SageMaker mounts /opt/ml/model and /opt/ml/output from the
# host, owned by root, and documents that it expects containers to run as root; another user
# could not write the model there.
# hadolint ignore=DL3002
USER root
CMD ["train"]
