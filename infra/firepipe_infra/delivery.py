"""What the delivery pipeline (pipeline.py) and the GitHub workflow (.github/workflows/deploy.yml)
share: the CDK CLI they run, the repository and tooling account the pipeline watches from, and
how each image of the registry is built from docker/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from firepipe_infra.config import ConfigError
from firepipe_infra.registry import DELIVERY_STACK, IMAGES

# app.py builds the pipeline stack (pipeline.DeliveryPipeline, whose stages hold the
# environments) instead of the bare environments when the synthesis is given `-c pipeline=true`
# (the pipeline's own synth step does).
PIPELINE_CONTEXT = "pipeline"
# The CDK CLI of every generated step (self-mutation, asset publishing) and of the synth step:
# the first CLI released after aws-cdk-lib 2.275.0, reading its cloud assembly schema (55).
# The GitHub workflow pins the same one (infra/tests/test_workflow.py checks it).
CDK_CLI_VERSION = "2.1147.0"
REPOSITORY = "firepipe/firepipe"
BRANCH = "main"
# Placeholders, like the environments' accounts in config.py: the tooling account that holds
# the pipeline, and the connection made there (a connection is created PENDING and completed
# by hand in the console, so it cannot be a resource of the pipeline's stack).
TOOLING_ACCOUNT = "444444444444"
TOOLING_REGION = "eu-west-1"
CONNECTION_ARN = (
    f"arn:aws:codeconnections:{TOOLING_REGION}:{TOOLING_ACCOUNT}:connection/"
    "00000000-0000-0000-0000-000000000000"
)
# registry.IMAGES are docker/<image>.Dockerfile, but for the agents' Lambda variant: a stage of
# the agents Dockerfile (its default target is the ECS worker).
STAGE_IMAGES = {"agents-lambda": ("agents", "lambda")}
REPO_ROOT = Path(__file__).resolve().parents[2]

_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_REPOSITORY = re.compile(r"^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$")
_BRANCH = re.compile(r"^(?!.*\.\.)[A-Za-z0-9._/-]+$")


@dataclass(frozen=True)
class DeliveryConfig:
    """Where the pipeline runs and what it watches. Checked in __post_init__."""

    account: str
    region: str
    connection_arn: str
    repository: str  # owner/name on GitHub
    branch: str

    def __post_init__(self) -> None:
        problems = []
        if not _ACCOUNT.match(self.account):
            problems.append(f"account {self.account!r} is not 12 digits")
        if not _REGION.match(self.region):
            problems.append(f"region {self.region!r} is not a region name such as eu-west-1")
        # A connection is usable only in the account and region that own it.
        if not re.fullmatch(
            rf"arn:aws[a-z-]*:(codestar-connections|codeconnections):{self.region}:"
            rf"{self.account}:connection/[0-9a-f-]{{36}}",
            self.connection_arn,
        ):
            problems.append(
                f"connection_arn {self.connection_arn!r} is not a connection of account "
                f"{self.account} in {self.region}"
            )
        if not _REPOSITORY.match(self.repository):
            problems.append(f"repository {self.repository!r} is not owner/name")
        if not _BRANCH.match(self.branch):
            problems.append(f"branch {self.branch!r} is not a branch name")
        if problems:
            raise ConfigError("delivery: " + "; ".join(problems))

    @property
    def prefix(self) -> str:
        """The pipeline's stack id and the start of its resources' names (the registry lets
        this stack's roles push, and its own repositories are `<prefix>/<image>`)."""
        return DELIVERY_STACK


DELIVERY = DeliveryConfig(
    account=TOOLING_ACCOUNT,
    region=TOOLING_REGION,
    connection_arn=CONNECTION_ARN,
    repository=REPOSITORY,
    branch=BRANCH,
)


@dataclass(frozen=True)
class ImageBuild:
    image: str  # the repository's name after the environment's prefix
    dockerfile: str  # from the repository root, the build context
    target: str | None  # the Dockerfile's stage, when not its last

    def docker_build(self, uri: str) -> str:
        target = f" --target {self.target}" if self.target else ""
        return f'docker build -f {self.dockerfile}{target} -t "{uri}" .'


def image_builds() -> tuple[ImageBuild, ...]:
    """How each image of the registry is built: a missing Dockerfile or stage fails the
    synthesis rather than the pipeline's build."""
    builds = []
    for image in IMAGES:
        name, target = STAGE_IMAGES.get(image, (image, None))
        dockerfile = f"docker/{name}.Dockerfile"
        path = REPO_ROOT / dockerfile
        if not path.is_file():
            raise ConfigError(f"image {image!r}: {dockerfile} does not exist")
        if target and not re.search(
            rf"^FROM\s.+\sAS\s+{target}\s*$", path.read_text(), re.I | re.M
        ):
            raise ConfigError(f"image {image!r}: {dockerfile} has no stage {target!r}")
        builds.append(ImageBuild(image, dockerfile, target))
    return tuple(builds)
