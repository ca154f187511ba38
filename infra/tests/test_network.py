import pytest
from aws_cdk.assertions import Match

INTERFACE_SERVICES = ["ecr.api", "ecr.dkr", "logs", "sqs", "secretsmanager", "sagemaker.runtime"]


@pytest.fixture(scope="module")
def dev(synthesised):
    return synthesised.template("firepipe-dev-network")


def test_vpc_has_the_configured_cidr_and_public_and_private_subnets(dev):
    dev.has_resource_properties("AWS::EC2::VPC", {"CidrBlock": "10.10.0.0/16"})
    subnets = dev.find_resources("AWS::EC2::Subnet")
    public = [s for s in subnets.values() if s["Properties"]["MapPublicIpOnLaunch"]]
    assert len(subnets) == 4
    assert len(public) == 2
    assert {s["Properties"]["AvailabilityZone"] for s in subnets.values()} == {
        "eu-west-1a",
        "eu-west-1b",
    }


def test_nat_gateways_follow_the_environment(synthesised, dev):
    dev.resource_count_is("AWS::EC2::NatGateway", 1)
    synthesised.template("firepipe-prod-network").resource_count_is("AWS::EC2::NatGateway", 3)


def test_interface_endpoints_are_private_and_admit_https_from_the_vpc_only(dev):
    endpoints = dev.find_resources(
        "AWS::EC2::VPCEndpoint", {"Properties": {"VpcEndpointType": "Interface"}}
    )
    names = sorted(e["Properties"]["ServiceName"] for e in endpoints.values())
    assert names == sorted(f"com.amazonaws.eu-west-1.{s}" for s in INTERFACE_SERVICES)
    assert all(e["Properties"]["PrivateDnsEnabled"] for e in endpoints.values())
    dev.has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {
            "SecurityGroupIngress": [
                Match.object_like({"CidrIp": "10.10.0.0/16", "FromPort": 443, "ToPort": 443})
            ]
        },
    )


@pytest.mark.parametrize("service", ["s3", "dynamodb"])
def test_gateway_endpoints_for_s3_and_dynamodb(dev, service):
    dev.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "VpcEndpointType": "Gateway",
            "ServiceName": {
                "Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, f".{service}"]]
            },
        },
    )


def test_flow_logs_capture_all_traffic_into_an_encrypted_log_group(dev):
    dev.has_resource_properties("AWS::EC2::FlowLog", {"ResourceType": "VPC", "TrafficType": "ALL"})
    dev.has_resource_properties(
        "AWS::Logs::LogGroup",
        {
            "RetentionInDays": 14,
            "KmsKeyId": {
                "Fn::ImportValue": Match.string_like_regexp("firepipe-dev-security:.*LogsKey")
            },
        },
    )


def test_one_ecs_cluster_per_environment_with_enhanced_container_insights(dev):
    [cluster] = dev.find_resources("AWS::ECS::Cluster").values()
    assert cluster["Properties"]["ClusterName"] == "firepipe-dev"
    assert cluster["Properties"]["ClusterSettings"] == [
        {"Name": "containerInsights", "Value": "enhanced"}
    ]
