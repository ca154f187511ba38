import json
import re
from pathlib import Path

import pytest
from aws_cdk import App, Stack
from firepipe_infra.config import ENVIRONMENTS, ConfigError
from firepipe_infra.registry import IMAGES, UNPUBLISHED_TAG, Registry, image_tag

DOCKER = Path(__file__).resolve().parents[2] / "docker"


@pytest.fixture(scope="module")
def dev(synthesised):
    return synthesised.template("firepipe-dev-registry")


def test_one_repository_per_image_of_docker(dev):
    """Every Dockerfile of docker/ has its repository, and the agents' Lambda stage one more."""
    built = {p.name.removesuffix(".Dockerfile") for p in DOCKER.glob("*.Dockerfile")}
    assert set(IMAGES) == built | {"agents-lambda"}
    repositories = dev.find_resources("AWS::ECR::Repository")
    assert sorted(r["Properties"]["RepositoryName"] for r in repositories.values()) == sorted(
        f"firepipe-dev/{image}" for image in IMAGES
    )
    for repository in repositories.values():
        properties = repository["Properties"]
        assert properties["ImageTagMutability"] == "IMMUTABLE"
        assert properties["ImageScanningConfiguration"] == {"ScanOnPush": True}
        assert '"countNumber":30' in properties["LifecyclePolicy"]["LifecyclePolicyText"]


def test_dev_repositories_are_emptied_on_delete_and_prod_kept(synthesised, dev):
    prod = synthesised.template("firepipe-prod-registry")
    dev_policies = {
        r["DeletionPolicy"] for r in dev.find_resources("AWS::ECR::Repository").values()
    }
    prod_repositories = prod.find_resources("AWS::ECR::Repository").values()
    assert dev_policies == {"Delete"}
    assert {r["DeletionPolicy"] for r in prod_repositories} == {"Retain"}
    assert all(
        r["Properties"]["EmptyOnDelete"]
        for r in dev.find_resources("AWS::ECR::Repository").values()
    )
    assert not any(r["Properties"].get("EmptyOnDelete") for r in prod_repositories)


def _registry(context: dict[str, str]) -> Registry:
    app = App(context=context)
    return Registry(Stack(app, "s"), "Registry", config=ENVIRONMENTS["dev"])


def test_the_deployed_tag_comes_from_the_image_tag_context():
    registry = _registry({"imageTag": "3f2a9c1"})
    assert registry.tag == "3f2a9c1"
    uri = Stack.of(registry).resolve(registry.image_uri("generator-cuda"))
    joined = "".join(part if isinstance(part, str) else "<token>" for part in uri["Fn::Join"][1])
    assert re.fullmatch(r".*<token>:3f2a9c1", joined)


def test_without_a_tag_nothing_pushed_is_deployed_and_a_bad_tag_is_refused():
    assert _registry({}).tag == UNPUBLISHED_TAG
    with pytest.raises(ConfigError, match="imageTag='a b' is not a Docker image tag"):
        _registry({"imageTag": "a b"})
    app = App()
    assert image_tag(app) == UNPUBLISHED_TAG
    with pytest.raises(KeyError, match="no image 'gpu'"):
        _registry({}).repository("gpu")


def test_only_the_delivery_pipelines_roles_may_push_from_the_tooling_account(synthesised):
    prod = synthesised.template("firepipe-prod-registry")
    for repository in prod.find_resources("AWS::ECR::Repository").values():
        statements = repository["Properties"]["RepositoryPolicyText"]["Statement"]
        [push] = [s for s in statements if s.get("Sid") == "PushFromTheDeliveryAccount"]
        assert push["Principal"] == {"AWS": "arn:aws:iam::444444444444:root"}
        assert push["Condition"] == {
            "ArnLike": {"aws:PrincipalArn": "arn:aws:iam::444444444444:role/firepipe-delivery-*"}
        }
        assert "ecr:PutImage" in push["Action"]
        assert not any(a.endswith("*") for a in push["Action"])


def test_emr_serverless_may_pull_its_image_for_this_accounts_applications_only(synthesised):
    dev = synthesised.template("firepipe-dev-registry")
    [repository] = dev.find_resources(
        "AWS::ECR::Repository", {"Properties": {"RepositoryName": "firepipe-dev/emr-serverless"}}
    ).values()
    statements = repository["Properties"]["RepositoryPolicyText"]["Statement"]
    [pull] = [s for s in statements if s.get("Sid") == "EmrServerlessPull"]
    assert pull["Principal"] == {"Service": "emr-serverless.amazonaws.com"}
    assert sorted(pull["Action"]) == [
        "ecr:BatchGetImage",
        "ecr:DescribeImages",
        "ecr:GetDownloadUrlForLayer",
    ]
    assert pull["Condition"] == {
        "ArnLike": {
            "aws:SourceArn": "arn:aws:emr-serverless:eu-west-1:111111111111:/applications/*"
        }
    }
    [application] = (
        synthesised.template("firepipe-dev-compute")
        .find_resources("AWS::EMRServerless::Application")
        .values()
    )
    uri = application["Properties"]["ImageConfiguration"]["ImageUri"]
    assert "RegistryEmrServerless" in json.dumps(uri)
    assert json.dumps(uri).endswith(':unpublished"]]}')
