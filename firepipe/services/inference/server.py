"""Running the inference service: `firepipe serve` locally or on ECS, and `serve`, the command
SageMaker runs in the container (`docker run IMAGE serve`): port SAGEMAKER_BIND_TO_PORT (8080
by default), the model in /opt/ml/model, no API keys (IAM and API Gateway authenticate).

One worker process, always: a device's online features need all its readings in one process,
and SAGEMAKER_MODEL_SERVER_WORKERS > 1 would spread them over several. A core left over serves
the scoring pool's threads (large batches) and the load balancer's health checks.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from firepipe.core.serving.scoring import ServingModel
from firepipe.lib.aws_env import MODEL_VERSION_VAR
from firepipe.services.inference.app import InferenceApp, create_app
from firepipe.services.inference.keys import load_access
from firepipe.services.inference.source import FolderSource, ModelHolder

SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")
SAGEMAKER_PORT_VAR = "SAGEMAKER_BIND_TO_PORT"
SAGEMAKER_WORKERS_VAR = "SAGEMAKER_MODEL_SERVER_WORKERS"
# Variables SageMaker itself sets in a hosting or batch transform container (others named
# SAGEMAKER_*, such as the SDK's SAGEMAKER_VALIDATE_ROLE, are set on people's machines too).
SAGEMAKER_HOSTING_VARS = ("SAGEMAKER_BIND_TO_PORT", "SAGEMAKER_SAFE_PORT_RANGE", "SAGEMAKER_BATCH")
POLL_VAR = "FIREPIPE_CHAMPION_POLL_S"
DEFAULT_POLL_S = 10.0
# Longer than a load balancer's idle timeout (ALB: 60 s), so the server never closes a
# connection the balancer is about to reuse (which would be answered with a 502).
KEEP_ALIVE_S = 75

if TYPE_CHECKING:
    import uvicorn


def in_sagemaker(environ: Mapping[str, str]) -> bool:
    return any(environ.get(name) for name in SAGEMAKER_HOSTING_VARS)


def poll_s(environ: Mapping[str, str]) -> float:
    text = environ.get(POLL_VAR, "").strip()
    try:
        value = float(text) if text else DEFAULT_POLL_S
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"{POLL_VAR} must be a number of seconds > 0, not {text!r}")
    return value


def describe(model: ServingModel) -> str:
    backend = model.scorer.backend
    if model.fallback_reason:
        backend += f", not compiled: {model.fallback_reason}"
    return f"{model.version} ({backend})"


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a port in use is the caller's error to report
    (uvicorn would exit the process) and port 0 gets a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def uvicorn_server(app: InferenceApp) -> uvicorn.Server:
    import uvicorn

    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,  # a log line a request would cost more than the answer
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    return uvicorn.Server(config)


def run(app: InferenceApp, sock: socket.socket) -> None:
    """Serve `app` on `sock` until SIGINT or SIGTERM (requests in flight are finished)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # What was imported and loaded lives as long as the process: frozen, out of the cyclic
    # collector's sight, so its full collections walk only what requests leave behind rather
    # than every object of MLflow, polars and the model (a pause that lands in the p99).
    gc.collect()
    gc.freeze()
    uvicorn_server(app).run(sockets=[sock])


def sagemaker_main(model_dir: Path = SAGEMAKER_MODEL_DIR) -> None:
    """`serve`: the SageMaker container's entry point."""
    environ = os.environ
    workers = environ.get(SAGEMAKER_WORKERS_VAR, "1").strip()
    if workers != "1":
        print(
            f"serve: {SAGEMAKER_WORKERS_VAR}={workers} ignored: one worker process holds every "
            "device's online state",
            file=sys.stderr,
        )
    try:
        version = environ.get(MODEL_VERSION_VAR, "").strip() or None
        holder = ModelHolder(FolderSource(model_dir, version))
        model = holder.load_now()
        sock = listen("0.0.0.0", int(environ.get(SAGEMAKER_PORT_VAR, "") or 8080))
    except Exception as e:  # the container ends, with the reason in its log
        raise SystemExit(f"serve: {type(e).__name__}: {e}") from e
    access = load_access(environ, sagemaker=True)
    print(f"serve: {describe(model)} on port {sock.getsockname()[1]}; {access.describe()}")
    run(create_app(holder, access), sock)
