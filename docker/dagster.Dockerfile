# syntax=docker/dockerfile:1
# The Dagster image: the webserver, the daemon and the firepipe code location (a gRPC server),
# each an ECS task with its own command, and the run tasks the EcsRunLauncher starts from the
# code location's image (DAGSTER_CURRENT_IMAGE). No ENTRYPOINT: the launcher gives a run task
# its command (`dagster api execute_run ...`), which an ENTRYPOINT would be put in front of.
#   docker build -f docker/dagster.Dockerfile .
#   webserver:     dagster-webserver -h 0.0.0.0 -p 3000 -w workspace.yaml
#   daemon:        dagster-daemon run -w workspace.yaml
#   code location: dagster code-server start -h 0.0.0.0 -p 4000 -m firepipe.definitions (CMD)

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# The uv the Makefile pins (UV_VERSION): the same resolver reads the same uv.lock.
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
# The environment sits at /app/.venv with the project installed editable from /app, as in a
# checkout: firepipe finds dbt/ and docs/ beside the package (firepipe.resources.dbt,
# the knowledge base's corpus).
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
COPY dbt ./dbt
COPY docs ./docs
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra aws
# The project's own modules compiled at build time too (uv compiles only the dependencies):
# otherwise every process of the image would compile them again as it starts.
# The dbt assets are built from the manifest when the definitions load (`make dbt-manifest`
# does the same; offline, no database opened).
RUN .venv/bin/python -m compileall -q firepipe \
    && DBT_SEND_ANONYMOUS_USAGE_STATS=false DBT_VERSION_CHECK=false \
    .venv/bin/dbt --no-use-colors parse --quiet --project-dir dbt --profiles-dir dbt --target local

FROM ${PYTHON_IMAGE}
# libgomp1: LightGBM's OpenMP runtime (its wheel does not carry it). gcc and libc6-dev: a run
# registering a model compiles its trees with tl2cgen (firepipe.core.serving.export); without a
# compiler the inference service falls back to LightGBM native.
# Not pinned: bookworm fixes these packages' ABI, and an exact version would break the build as
# soon as a security update replaces it in the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/firepipe firepipe \
    && install -d -o firepipe -g firepipe /var/lib/firepipe \
        /opt/dagster/dagster_home /opt/dagster/compute_logs
COPY --from=build /app /app
# dbt writes its target/ and logs/ inside the project folder on every invocation.
COPY --from=build --chown=firepipe:firepipe /app/dbt /app/dbt
COPY docker/dagster.yaml /opt/dagster/dagster_home/dagster.yaml
COPY docker/workspace.yaml /app/workspace.yaml
ENV PATH=/app/.venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    FIREPIPE_HOME=/var/lib/firepipe \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false \
    DBT_VERSION_CHECK=false \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /app
EXPOSE 3000 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "firepipe.definitions"]
