# syntax=docker/dockerfile:1
# The agents image: the monitoring, analysis and response agents as ECS services, one worker
# process per task (`python -m firepipe.services.agents.worker <agent>`; ECS restarts a task
# that dies, as `firepipe agents run` does locally). Each service names its agent in the task's
# command; the CMD runs the monitoring agent. The aws extra: SQS, SNS, DynamoDB and Step
# Functions through boto3. No ENTRYPOINT, so a task's command replaces the CMD whole.
#   docker build -f docker/agents.Dockerfile .
# The `lambda` stage is the same environment as a Lambda container image: its ENTRYPOINT is the
# runtime interface client (the lambda extra's awslambdaric) and its CMD names the handler, which
# each function overrides (firepipe.services.agents.lambdas.monitoring, .analysis, .response,
# .escalate; firepipe.services.actions.bedrock_lambda.handler).
#   docker build -f docker/agents.Dockerfile --target lambda .

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
    uv sync --frozen --no-dev --no-install-project --extra aws --extra lambda
COPY firepipe ./firepipe
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra aws --extra lambda
# The project's own modules compiled at build time too (uv compiles only the dependencies):
# otherwise every process of the image would compile them again as it starts.
RUN .venv/bin/python -m compileall -q firepipe

FROM ${PYTHON_IMAGE} AS runtime
# libgomp1: LightGBM's OpenMP runtime (its wheel does not carry it): the analysis agent scores.
# Not pinned: bookworm fixes its ABI, and an exact version would break the build as soon as a
# security update replaces it in the archive.
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

FROM runtime AS lambda
# The production Dagster instance (docker/dagster.yaml, as in the Dagster image): the action
# group's function queues fire runs on it. Lambda's file system is read-only but for /tmp.
COPY docker/dagster.yaml /opt/dagster/dagster_home/dagster.yaml
ENV FIREPIPE_HOME=/tmp/firepipe \
    DAGSTER_HOME=/opt/dagster/dagster_home
ENTRYPOINT ["python", "-m", "awslambdaric"]
CMD ["firepipe.services.agents.lambdas.monitoring"]

# The ECS worker image, the default target (the last stage).
FROM runtime AS worker
CMD ["python", "-m", "firepipe.services.agents.worker", "monitoring"]
