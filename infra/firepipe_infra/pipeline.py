"""The AWS-native delivery pipeline: CDK Pipelines (CodePipeline and CodeBuild) in a tooling
account, with the stages of the GitHub workflow (.github/workflows/deploy.yml).

Source: the GitHub repository through a CodeConnections (CodeStar) connection. Synth: the CDK
app with `-c pipeline=true` (app.py then builds this stack, whose stages hold the environments)
and `-c imageTag=<commit>`, cdk-nag failing it on an error. The pipeline then updates itself
(self-mutation), builds every image once into the tooling account's repositories, and deploys
dev, staging and prod in turn, staging and prod after a manual approval. In each environment
the registry stack is deployed first, the built images are promoted into its repositories by
digest under the commit's tag (so prod runs the bytes dev and staging ran), and the stacks that
run them deploy after that (they depend on the registry stack, and CDK Pipelines orders a
stack's dependents after its post steps). The Spark engines' code travels as an asset of the
compute stack (spark_code.py).

Each environment's account is bootstrapped once to trust the tooling account
(`cdk bootstrap --trust <tooling account>`, docs/runbooks/deploy.md): the deploy actions assume
its CDK roles. The artifact bucket is encrypted with a customer key that those roles are granted,
which deploying into another account requires. delivery.py holds what the GitHub workflow
shares with it: the CDK CLI, the tooling account's configuration, the image builds.
"""

from __future__ import annotations

from aws_cdk import (
    Acknowledgment,
    CfnElement,
    Duration,
    Environment,
    RemovalPolicy,
    Stack,
    Stage,
    Tags,
    Validations,
    pipelines,
)
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from firepipe_infra.config import ConfigError, EnvironmentConfig, check_environments
from firepipe_infra.delivery import (
    CDK_CLI_VERSION,
    PIPELINE_CONTEXT,
    DeliveryConfig,
    image_builds,
)
from firepipe_infra.naming import pascal
from firepipe_infra.registry import (
    IMAGE_TAG_CONTEXT,
    PULL_ACTIONS,
    PUSH_ACTIONS,
    ecr_registry,
    image_repository,
)
from firepipe_infra.stacks import EnvironmentStacks, build_environment, pin_availability_zones

# The images are built in CodeBuild, on Docker (BuildKit: the Dockerfiles use cache mounts).
# The CUDA image is the long one; LARGE halves its build against the default SMALL.
IMAGE_BUILD_TIMEOUT = Duration.hours(2)
BUILD_LOG_RETENTION = logs.RetentionDays.ONE_YEAR
ARTIFACT_DAYS = 30  # pipeline artifacts (source zips, cloud assemblies) kept this long
PROMOTE_SCRIPT = "infra/artifacts/promote-images.sh"


class EnvironmentStage(Stage):
    """One environment's stacks (stacks.build_environment), deployed by the pipeline."""

    def __init__(self, scope: Construct, config: EnvironmentConfig) -> None:
        super().__init__(
            scope, config.name, env=Environment(account=config.account, region=config.region)
        )
        self.config = config
        pin_availability_zones(self, config)
        self.stacks: EnvironmentStacks = build_environment(self, config)


class DeliveryPipeline(Stack):
    def __init__(
        self,
        scope: Construct,
        *,
        delivery: DeliveryConfig,
        environments: dict[str, EnvironmentConfig],
    ) -> None:
        super().__init__(
            scope,
            delivery.prefix,
            env=Environment(account=delivery.account, region=delivery.region),
            description="firepipe: the delivery pipeline (CDK Pipelines) of every environment",
        )
        Tags.of(self).add("project", "firepipe")
        Tags.of(self).add("concern", "delivery")
        if not environments:
            raise ConfigError("delivery: no environment to deploy")
        check_environments(environments)
        self.builds = image_builds()
        self.image_repositories = self._image_repositories(delivery)
        self.key = self._key(delivery)
        self.source = pipelines.CodePipelineSource.connection(
            delivery.repository, delivery.branch, connection_arn=delivery.connection_arn
        )
        # The commit both the synthesis (-c imageTag) and the image builds use as the tag.
        self.commit = self.source.source_attribute("CommitId")
        self.synth = pipelines.ShellStep(
            "Synth",
            input=self.source,
            env={"IMAGE_TAG": self.commit},
            commands=[
                # The infra environment alone (the Makefile's rule for it; `make synth` would
                # synthesise the bare environments too), then the app with the pipeline.
                "make infra/.venv/.synced",
                "cd infra",
                f"npx --yes aws-cdk@{CDK_CLI_VERSION} synth --quiet"
                f" -c {PIPELINE_CONTEXT}=true"
                f' -c {IMAGE_TAG_CONTEXT}="$IMAGE_TAG"',
            ],
            primary_output_directory="infra/cdk.out",
        )
        artifacts = self._artifact_bucket()
        self.pipeline = pipelines.CodePipeline(
            self,
            "Pipeline",
            pipeline_name=delivery.prefix,
            synth=self.synth,
            self_mutation=True,
            cross_account_keys=True,
            enable_key_rotation=True,
            artifact_bucket=artifacts,
            cli_version=CDK_CLI_VERSION,
            # No asset of the app is bundled in Docker (its Lambda code is the CDK's own custom
            # resources, shipped built; the Spark code is built by uv within the synthesis,
            # spark_code.py; the images are built by the step below), so the synthesis runs
            # unprivileged. A bundled asset would need this set first.
            docker_enabled_for_synth=False,
            code_build_defaults=pipelines.CodeBuildOptions(
                build_environment=codebuild.BuildEnvironment(
                    build_image=codebuild.LinuxBuildImage.STANDARD_7_0
                ),
                partial_build_spec=codebuild.BuildSpec.from_object(
                    {
                        "phases": {
                            "install": {"runtime-versions": {"python": "3.11", "nodejs": "20"}}
                        }
                    }
                ),
                logging=codebuild.LoggingOptions(
                    cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=self._build_logs())
                ),
            ),
        )
        # The images are built once, before the first environment; each environment's registry
        # stack then receives them by digest.
        self.build_images = self._build_images(delivery)
        self.stages: list[EnvironmentStage] = []
        self.promote_steps: dict[str, pipelines.CodeBuildStep] = {}
        for i, config in enumerate(environments.values()):
            stage = EnvironmentStage(self, config)
            promote = self._promote_images(delivery, config)
            # Every environment after the first waits for a person: dev deploys on each push,
            # staging and prod take a commit that has run in the one before.
            pre: list[pipelines.Step] = (
                [
                    pipelines.ManualApprovalStep(
                        f"Approve-{config.name}",
                        comment=f"Deploy this commit to {config.name}?",
                    )
                ]
                if i
                else [self.build_images]
            )
            self.pipeline.add_stage(
                stage,
                pre=pre,
                stack_steps=[pipelines.StackSteps(stack=stage.stacks.registry, post=[promote])],
            )
            self.stages.append(stage)
            self.promote_steps[config.name] = promote
        self.pipeline.build_pipeline()
        self._acknowledge_generated_wildcards(artifacts)

    def _key(self, delivery: DeliveryConfig) -> kms.Key:
        key = kms.Key(
            self,
            "Key",
            alias=f"alias/{delivery.prefix}",
            description=f"{delivery.prefix}: pipeline artifacts and build logs",
            enable_key_rotation=True,
        )
        # CloudWatch Logs encrypts the build logs with the key itself (as in security.py).
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{self.region}.amazonaws.com")],
                actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{self.partition}:logs:{self.region}:{self.account}:*"
                        )
                    }
                },
            )
        )
        return key

    def _artifact_bucket(self) -> s3.Bucket:
        """The pipeline's artifacts, with the customer key the other accounts' deploy roles are
        granted, access-logged into a bucket of their own (SSE-S3: S3 cannot deliver access logs
        to a KMS-encrypted bucket)."""
        access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
        )
        return s3.Bucket(
            self,
            "Artifacts",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="artifacts/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(ARTIFACT_DAYS),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
        )

    def _build_logs(self) -> logs.LogGroup:
        return logs.LogGroup(
            self,
            "BuildLogs",
            log_group_name="/firepipe/delivery/codebuild",
            retention=BUILD_LOG_RETENTION,
            encryption_key=self.key,
        )

    def _image_repositories(self, delivery: DeliveryConfig) -> dict[str, ecr.Repository]:
        """Where each commit's images are built to, once, in the tooling account: the source
        every environment promotes from. Kept as the environments keep theirs."""
        return {
            build.image: image_repository(
                self,
                f"Image{pascal(build.image)}",
                name=f"{delivery.prefix}/{build.image}",
                removal_policy=RemovalPolicy.RETAIN,
                empty_on_delete=False,
            )
            for build in self.builds
        }

    def _build_images(self, delivery: DeliveryConfig) -> pipelines.CodeBuildStep:
        """Build every image once and push it to the tooling account's repositories under the
        commit's tag; write `images/<image>`, the reference each was built as
        (`<registry>/<repository>@<digest>`), which the promotions read. The tags are
        immutable: an image already built under it (a retried execution) is not rebuilt."""
        commands = [
            f"aws ecr get-login-password --region {delivery.region}"
            ' | docker login --username AWS --password-stdin "$REGISTRY"',
            "mkdir -p images",
        ]
        for build in self.builds:
            repository = f"{delivery.prefix}/{build.image}"  # _image_repositories' name
            uri = f"$REGISTRY/{repository}:$IMAGE_TAG"
            describe = (
                f"aws ecr describe-images --region {delivery.region}"
                f' --repository-name {repository} --image-ids imageTag="$IMAGE_TAG"'
            )
            commands += [
                f"{describe} > /dev/null 2>&1"
                f' || {{ {build.docker_build(uri)} && docker push "{uri}"; }}',
                # Two commands joined: a failed look-up fails the build (a substitution inside
                # echo would not).
                f"digest=$({describe} --query 'imageDetails[0].imageDigest' --output text)"
                f' && echo "$REGISTRY/{repository}@$digest" > images/{build.image}',
            ]
        repositories = self.image_repositories.values()
        return pipelines.CodeBuildStep(
            "BuildImages",
            input=self.source,
            env={
                "IMAGE_TAG": self.commit,
                "REGISTRY": ecr_registry(delivery.account, delivery.region),
                "DOCKER_BUILDKIT": "1",
            },
            commands=commands,
            primary_output_directory="images",
            build_environment=codebuild.BuildEnvironment(
                privileged=True,  # Docker
                compute_type=codebuild.ComputeType.LARGE,
            ),
            timeout=IMAGE_BUILD_TIMEOUT,
            role_policy_statements=[
                # ECR's login has no resource to scope it to.
                iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]),
                iam.PolicyStatement(
                    actions=list(PUSH_ACTIONS),
                    resources=[r.repository_arn for r in repositories],
                ),
            ],
        )

    def _promote_images(
        self, delivery: DeliveryConfig, config: EnvironmentConfig
    ) -> pipelines.CodeBuildStep:
        """Copy the built images into the environment's repositories by digest, under the
        commit's tag (infra/artifacts/promote-images.sh, which the GitHub workflow runs too)."""
        source = ecr_registry(delivery.account, delivery.region)
        target = ecr_registry(config.account, config.region)
        images = " ".join(build.image for build in self.builds)
        return pipelines.CodeBuildStep(
            f"PromoteImages-{config.name}",
            input=self.source,
            additional_inputs={"images": self.build_images},
            env={"IMAGE_TAG": self.commit, "SOURCE_REGISTRY": source, "REGISTRY": target},
            install_commands=[
                # Ubuntu's skopeo: it copies an image between registries without rewriting it
                # (the script checks the digest ECR then holds; this image's 1.4 predates
                # --preserve-digests).
                "apt-get update -q",
                "apt-get install -y -q --no-install-recommends skopeo",
            ],
            commands=[
                f"aws ecr get-login-password --region {delivery.region}"
                ' | skopeo login --username AWS --password-stdin "$SOURCE_REGISTRY"',
                f"aws ecr get-login-password --region {config.region}"
                ' | skopeo login --username AWS --password-stdin "$REGISTRY"',
                f'bash {PROMOTE_SCRIPT} images "$REGISTRY" {config.prefix} "$IMAGE_TAG" {images}',
            ],
            role_policy_statements=[
                iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]),
                iam.PolicyStatement(
                    actions=list(PULL_ACTIONS),
                    resources=[r.repository_arn for r in self.image_repositories.values()],
                ),
                iam.PolicyStatement(
                    actions=list(PUSH_ACTIONS),
                    resources=[
                        self.format_arn(
                            service="ecr",
                            account=config.account,
                            region=config.region,
                            resource="repository",
                            resource_name=f"{config.prefix}/{build.image}",
                        )
                        for build in self.builds
                    ],
                ),
            ],
        )

    def _acknowledge_generated_wildcards(self, artifacts: s3.Bucket) -> None:
        """CDK Pipelines writes its roles' policies itself; their wildcards come from the L2
        grants and from what a CodeBuild project always grants its own role."""
        where = f"arn:{self.partition}:{{}}:{self.region}:{self.account}"
        bucket = self.get_logical_id(_cfn(artifacts))
        findings = {
            **dict.fromkeys(
                (
                    "Action::s3:GetObject*",
                    "Action::s3:GetBucket*",
                    "Action::s3:List*",
                    "Action::s3:DeleteObject*",
                    "Action::s3:Abort*",
                    "Action::kms:ReEncrypt*",
                    "Action::kms:GenerateDataKey*",
                    f"Resource::<{bucket}.Arn>/*",
                ),
                "The pipeline's roles (pipeline, source, synth, self-mutation, asset publishing, "
                "image build and promotions) use the artifact bucket and its key through the L2 "
                "grants (grantRead, grantReadWrite), whose actions and object keys end in '*'.",
            ),
            "Resource::*": (
                "The construct's own statements: the self-mutation role describes "
                "CloudFormation stacks and lists buckets, the asset-publishing role starts and "
                "reads its CodeBuild builds. The image build and promotions log in to ECR "
                "(ecr:GetAuthorizationToken has no resource to scope it to)."
            ),
            f"Resource::arn:*:iam::{self.account}:role/*": (
                "The self-mutation step assumes the CDK bootstrap roles it deploys with; the "
                "construct limits it to roles tagged aws-cdk:bootstrap-role."
            ),
            **dict.fromkeys(
                (
                    f"Resource::{where.format('codebuild')}:report-group/*",
                    f"Resource::{where.format('logs')}:log-group:/aws/codebuild/*",
                ),
                "The asset-publishing role is shared by one CodeBuild project per asset, "
                "which the construct creates as the stages need them.",
            ),
        }
        Validations.of(self.pipeline).acknowledge(
            *(Acknowledgment(id=f"AwsSolutions-IAM5[{f}]", reason=r) for f, r in findings.items())
        )
        # A CodeBuild project grants the role it makes its own report groups and default log
        # group, names that end in '*' (the builds' logs go to BuildLogs all the same). The
        # asset-publishing projects share FileRole, acknowledged above.
        for project in self.pipeline.node.find_all():
            if isinstance(project, codebuild.Project) and _owns_role(project):
                name = self.get_logical_id(_cfn(project))
                Validations.of(project).acknowledge(
                    Acknowledgment(
                        id=f"AwsSolutions-IAM5[Resource::{where.format('codebuild')}"
                        f":report-group/<{name}>-*]",
                        reason="CodeBuild's grant to its project's role: the project's report "
                        "groups",
                    ),
                    Acknowledgment(
                        id=f"AwsSolutions-IAM5[Resource::{where.format('logs')}"
                        f":log-group:/aws/codebuild/<{name}>:*]",
                        reason="CodeBuild's grant to its project's role: the streams of the "
                        "project's default log group",
                    ),
                )


def _owns_role(project: codebuild.Project) -> bool:
    role = project.role
    return role is not None and role.node.path.startswith(project.node.path + "/")


def _cfn(construct: Construct) -> CfnElement:
    child = construct.node.default_child
    assert isinstance(child, CfnElement)
    return child
