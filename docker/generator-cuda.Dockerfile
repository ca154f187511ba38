# syntax=docker/dockerfile:1
# The generator image, CUDA variant: what the AWS Batch jobs on the GPU queue run (the job asks
# for one GPU; firepipe.resources.compute.BatchCompute), with CuPy (the gpu extra) as the array
# backend. Same command as the CPU variant, `python -m firepipe.services.generate`, through
# Dagster Pipes over S3; no ENTRYPOINT, for the same reason.
#   docker build -f docker/generator-cuda.Dockerfile .
# The CUDA runtime image carries the CUDA libraries CuPy loads (cuBLAS, cuRAND, cuFFT, NVRTC for
# its kernels); the host's driver comes in through the NVIDIA container toolkit (Batch's GPU AMI).

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
# The uv the Makefile pins (UV_VERSION): the same resolver reads the same uv.lock.
ARG UV_VERSION=0.13.9
ARG PYTHON_VERSION=3.11.14

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM ${CUDA_IMAGE} AS build
ARG PYTHON_VERSION
COPY --from=uv /uv /usr/local/bin/uv
# Ubuntu ships no Python 3.11 (24.04 has 3.12): uv installs a relocatable standalone CPython
# under /opt/python, copied into the final stage at the same path. It runs from / , before the
# project (whose pyproject forbids interpreter downloads for people's machines) is copied in.
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN uv python install "${PYTHON_VERSION}"
WORKDIR /app
# Dependencies alone first: their layer is rebuilt when the lock changes, not with the code.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --extra aws --extra gpu \
        --python "${PYTHON_VERSION}"
COPY firepipe ./firepipe
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra aws --extra gpu --python "${PYTHON_VERSION}"
# The project's own modules compiled at build time too (uv compiles only the dependencies):
# otherwise every process of the image would compile them again as it starts.
RUN .venv/bin/python -m compileall -q firepipe

FROM ${CUDA_IMAGE}
# libgomp1: the OpenMP runtime of LightGBM and of numba's threading layer (their wheels do not
# carry it). Not pinned: the Ubuntu release fixes its ABI, and an exact version would break the
# build as soon as a security update replaces it in the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
# A home of its own: CuPy caches its compiled kernels under ~/.cupy.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/firepipe firepipe \
    && install -d -o firepipe -g firepipe /var/lib/firepipe
COPY --from=build /opt/python /opt/python
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    FIREPIPE_HOME=/var/lib/firepipe \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /app
CMD ["python", "-m", "firepipe.services.generate"]
