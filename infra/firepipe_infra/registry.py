"""The container registry: one ECR repository per image of docker/, and the tag every stack
deploys.

The repositories live in a stack of their own, deployed before the images arrive: the delivery
pipeline builds each image once per commit, and in each environment deploys the registry,
promotes the built images into it by digest under the commit's tag
(infra/artifacts/promote-images.sh), then deploys the stacks that run them with
`-c imageTag=<tag>` (IMAGE_TAG_CONTEXT). Tags are immutable, so a tag always names the image
that was tested under it, and a rollback is a deploy of the previous tag.
"""

from __future__ import annotations

import re

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from firepipe_infra.config import ConfigError, EnvironmentConfig, Stateful
from firepipe_infra.naming import pascal

# docker/<image>.Dockerfile, and agents-lambda: the agents image's Lambda stage
# (docker/agents.Dockerfile --target lambda), a repository of its own because Lambda runs only
# images whose entry point is the runtime interface client.
IMAGES = (
    "dagster",
    "generator",
    "generator-cuda",
    "training",
    "inference",
    "agents",
    "agents-lambda",
    "emr-serverless",
)
IMAGE_TAG_CONTEXT = "imageTag"
# What an offline synthesis without `-c imageTag=...` deploys: no pushed image has this tag, so
# a stack deployed from such a synthesis fails to pull rather than running a stale image.
UNPUBLISHED_TAG = "unpublished"
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # Docker's tag grammar
KEPT_IMAGES = 30  # per repository: the rollback window, in pushes
# The delivery pipeline's stack (delivery.DeliveryConfig.prefix), whose promotion roles push.
DELIVERY_STACK = "firepipe-delivery"


# What pushing an image takes, and pulling one (the promotion's source, EMR Serverless).
PULL_ACTIONS = ("ecr:BatchGetImage", "ecr:DescribeImages", "ecr:GetDownloadUrlForLayer")
PUSH_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:DescribeImages",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
)


def ecr_registry(account: str, region: str) -> str:
    """The host of an account's registry in a region, as `docker login` and image URIs name it."""
    return f"{account}.dkr.ecr.{region}.amazonaws.com"


def image_repository(
    scope: Construct, id: str, *, name: str, removal_policy: RemovalPolicy, empty_on_delete: bool
) -> ecr.Repository:
    """A repository of images: immutable tags (a tag always names the image tested under it),
    scanned on push, the last KEPT_IMAGES kept."""
    return ecr.Repository(
        scope,
        id,
        repository_name=name,
        image_tag_mutability=ecr.TagMutability.IMMUTABLE,
        image_scan_on_push=True,
        lifecycle_rules=[
            ecr.LifecycleRule(
                description=f"keep the last {KEPT_IMAGES} images", max_image_count=KEPT_IMAGES
            )
        ],
        removal_policy=removal_policy,
        empty_on_delete=empty_on_delete,
    )


def image_tag(scope: Construct) -> str:
    """The tag to deploy: the `imageTag` context value (`cdk deploy -c imageTag=<git sha>`)."""
    tag = scope.node.try_get_context(IMAGE_TAG_CONTEXT) or UNPUBLISHED_TAG
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise ConfigError(f"context {IMAGE_TAG_CONTEXT}={tag!r} is not a Docker image tag")
    return tag


class Registry(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        push_account: str | None = None,
    ) -> None:
        """`push_account`: another account whose principals may push images (the delivery
        pipeline's tooling account; its promotion roles hold the matching identity policy)."""
        super().__init__(scope, id)
        self.tag = image_tag(self)
        self.repositories = {
            name: image_repository(
                self,
                pascal(name),
                name=f"{config.prefix}/{name}",
                removal_policy=config.removal_policy,
                empty_on_delete=config.stateful is Stateful.DESTROY,
            )
            for name in IMAGES
        }
        # EMR Serverless pulls its application's image with its own principal, for this
        # account's applications only.
        stack = Stack.of(self)
        self.repositories["emr-serverless"].add_to_resource_policy(
            iam.PolicyStatement(
                sid="EmrServerlessPull",
                principals=[iam.ServicePrincipal("emr-serverless.amazonaws.com")],
                actions=list(PULL_ACTIONS),
                conditions={
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{stack.partition}:emr-serverless:{stack.region}:"
                        f"{stack.account}:/applications/*"
                    }
                },
            )
        )
        if push_account and push_account != Stack.of(self).account:
            for repository in self.repositories.values():
                repository.add_to_resource_policy(
                    iam.PolicyStatement(
                        sid="PushFromTheDeliveryAccount",
                        principals=[iam.AccountPrincipal(push_account)],
                        # The delivery pipeline's roles only (CDK names them after their
                        # stack), not every principal of that account.
                        conditions={
                            "ArnLike": {
                                "aws:PrincipalArn": f"arn:aws:iam::{push_account}:role/"
                                f"{DELIVERY_STACK}-*"
                            }
                        },
                        actions=list(PUSH_ACTIONS),
                    )
                )

    def repository(self, image: str) -> ecr.Repository:
        try:
            return self.repositories[image]
        except KeyError:
            raise KeyError(f"no image {image!r}: one of {', '.join(IMAGES)}") from None

    def image(self, image: str) -> ecs.ContainerImage:
        """The deployed tag of `image`, for an ECS container (pull rights are granted to the
        task's execution role)."""
        return ecs.ContainerImage.from_ecr_repository(self.repository(image), self.tag)

    def image_uri(self, image: str) -> str:
        """`<account>.dkr.ecr.<region>.amazonaws.com/firepipe-<env>/<image>:<tag>`, for what
        takes a URI (Batch, SageMaker, Lambda)."""
        return self.repository(image).repository_uri_for_tag(self.tag)
