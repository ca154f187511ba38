"""Network: the VPC (public subnets for the NAT gateways and the load balancer; private subnets
for every task), its flow logs, the endpoints that keep AWS traffic off the NAT, and the ECS
cluster every service and run of the environment shares."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from firepipe_infra.config import EnvironmentConfig

# Reached from the private subnets through interface endpoints: image pulls (ECR API and
# registry), logs, the agents' queues, secrets and the SageMaker endpoint's scoring calls.
INTERFACE_ENDPOINTS = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "SageMakerRuntime": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
}
# Gateway endpoints are free and carry the heaviest traffic (the lake, the agents' tables).
GATEWAY_ENDPOINTS = {
    "S3": ec2.GatewayVpcEndpointAwsService.S3,
    "DynamoDb": ec2.GatewayVpcEndpointAwsService.DYNAMODB,
}


class Network(Construct):
    def __init__(
        self, scope: Construct, id: str, *, config: EnvironmentConfig, logs_key: kms.IKey
    ) -> None:
        super().__init__(scope, id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            vpc_name=config.prefix,
            ip_addresses=ec2.IpAddresses.cidr(config.vpc_cidr),
            availability_zones=list(config.availability_zones),
            nat_gateways=config.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                ),
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
                ),
            ],
            # Every resource gets a security group of its own; the default one must admit
            # nothing, so a resource left in it by mistake is cut off rather than open.
            restrict_default_security_group=True,
            gateway_endpoints={
                name: ec2.GatewayVpcEndpointOptions(service=service)
                for name, service in GATEWAY_ENDPOINTS.items()
            },
        )
        self.flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            encryption_key=logs_key,
            retention=config.log_retention,
            removal_policy=config.removal_policy,
        )
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
        # One group for the interface endpoints: HTTPS from inside the VPC. The CIDR is the
        # configured literal (not the VPC's attribute) so cdk-nag can check the rule (EC23).
        self.endpoints_security_group = ec2.SecurityGroup(
            self,
            "EndpointsSecurityGroup",
            vpc=self.vpc,
            description="HTTPS from the VPC to the interface endpoints",
            allow_all_outbound=False,
        )
        self.endpoints_security_group.add_ingress_rule(
            ec2.Peer.ipv4(config.vpc_cidr), ec2.Port.tcp(443), "HTTPS from the VPC"
        )
        private = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.interface_endpoints = {
            name: self.vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=private,
                private_dns_enabled=True,
                security_groups=[self.endpoints_security_group],
                open=False,
            )
            for name, service in INTERFACE_ENDPOINTS.items()
        }
        # One Fargate cluster per environment: Dagster's services and runs and the agents'
        # workers. Container Insights (enhanced) gives per-service and per-task metrics.
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            cluster_name=config.prefix,
            vpc=self.vpc,
            container_insights_v2=ecs.ContainerInsights.ENHANCED,
        )
