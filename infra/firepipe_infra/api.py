"""The APIs: the inference service and the action API (their Fargate services and internal
Network Load Balancer: api_backends.py), published through a REST API in API Gateway (usage
plan, API key, throttling, WAF).

REST, not HTTP API: usage plans and API keys exist on REST APIs only, and a REST API reaches a
VPC through a VPC link to a Network Load Balancer. The gateway forwards the caller's
`x-api-key` header, and the services check it again against the API keys secret: the gateway's
key IS the secret's `initial` key (a dynamic reference resolved at deploy time), so one value
passes both checks.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, Validations
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from firepipe_infra.api_backends import SERVICES, ApiBackends, ServiceSpec
from firepipe_infra.config import EnvironmentConfig
from firepipe_infra.network import Network
from firepipe_infra.registry import Registry
from firepipe_infra.security import Security

# security.py generates the API keys secret's first key under this field (generate_string_key).
INITIAL_KEY_FIELD = "initial"
STAGE = "v1"  # the contract's version; each environment has an API of its own
# A WAF rate-based rule counts each client address over five minutes: twice what a key may
# send steadily (config.api_rate_limit) is a flood, whoever's key it carries.
WAF_WINDOW_S = 300


class Apis(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        security: Security,
        network: Network,
        registry: Registry,
    ) -> None:
        super().__init__(scope, id)
        self._config, self._security = config, security
        self.backends = ApiBackends(
            self, "Backends", config=config, security=security, network=network, registry=registry
        )
        self.load_balancer = self.backends.load_balancer
        self.services = self.backends.services
        self.containers = self.backends.containers
        self.log_groups: dict[str, logs.LogGroup] = dict(self.backends.log_groups)
        self.rest_api = self._rest_api()
        self.vpc_link = apigw.VpcLink(
            self, "VpcLink", vpc_link_name=config.prefix, targets=[self.load_balancer]
        )
        # The gateway checks the proxied path; with no request model on a proxy method, a body
        # passes to the service, whose own schemas check it (with a 400 naming the field).
        validator = self.rest_api.add_request_validator(
            "Validator",
            request_validator_name="parameters-and-body",
            validate_request_parameters=True,
            validate_request_body=True,
        )
        for spec in SERVICES:
            self._route(spec, validator)
        self.usage_plan = self.rest_api.add_usage_plan(
            "UsagePlan",
            name=config.prefix,
            description="Each key's rate, burst and daily quota",
            throttle=apigw.ThrottleSettings(
                rate_limit=config.api_rate_limit, burst_limit=config.api_burst_limit
            ),
            quota=apigw.QuotaSettings(limit=config.api_daily_quota, period=apigw.Period.DAY),
            api_stages=[
                apigw.UsagePlanPerApiStage(api=self.rest_api, stage=self.rest_api.deployment_stage)
            ],
        )
        self.api_key = apigw.ApiKey(
            self,
            "ApiKey",
            api_key_name=f"{config.prefix}-{INITIAL_KEY_FIELD}",
            description=f"The API keys secret's {INITIAL_KEY_FIELD!r} key",
            value=security.api_keys_secret.secret_value_from_json(
                INITIAL_KEY_FIELD
            ).unsafe_unwrap(),
        )
        self.usage_plan.add_api_key(self.api_key)
        self.web_acl = self._web_acl()
        # Nothing in firepipe calls these APIs (clients outside do, with a key): no variable
        # to hand on, and no grant_use.
        self.environment: dict[str, str] = {}

    @property
    def url(self) -> str:
        return self.rest_api.url

    def _log_group(self, name: str, log_group_name: str | None = None) -> logs.LogGroup:
        group = logs.LogGroup(
            self,
            f"{name.capitalize()}Logs",
            log_group_name=log_group_name,
            encryption_key=self._security.logs_key,
            retention=self._config.log_retention,
            removal_policy=self._config.removal_policy,
        )
        self.log_groups[name] = group
        return group

    def _rest_api(self) -> apigw.RestApi:
        config = self._config
        access_logs = self._log_group("access")
        api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=config.prefix,
            description="firepipe: the inference service and the action API",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            api_key_source_type=apigw.ApiKeySourceType.HEADER,
            # Execution logging needs the account's CloudWatch role (one per account and
            # region, written by this API).
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=config.removal_policy,
            default_method_options=apigw.MethodOptions(api_key_required=True),
            deploy_options=apigw.StageOptions(
                stage_name=STAGE,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                tracing_enabled=True,
                logging_level=apigw.MethodLoggingLevel.INFO,
                data_trace_enabled=False,  # bodies hold readings and schemas: not logged
                metrics_enabled=True,
            ),
        )
        # TLS 1.2 at least on the execute-api endpoint (CfnRestApi's SecurityPolicy).
        cfn_api = api.node.default_child
        assert isinstance(cfn_api, apigw.CfnRestApi)
        cfn_api.security_policy = apigw.SecurityPolicy.TLS_1_2.value
        # API Gateway writes execution logs into this group, which it would otherwise create
        # unencrypted and kept forever; made first, it is encrypted and expires.
        execution_logs = self._log_group(
            "execution", f"API-Gateway-Execution-Logs_{api.rest_api_id}/{STAGE}"
        )
        api.deployment_stage.node.add_dependency(execution_logs)
        role = api.node.find_child("CloudWatchRole")
        Validations.of(role).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                reason="API Gateway's account-wide logging role: the managed policy is the one "
                "AWS maintains for it, and API Gateway names the log groups it writes.",
            )
        )
        return api

    def _route(self, spec: ServiceSpec, validator: apigw.RequestValidator) -> None:
        """/<service>/{proxy+}: any method, forwarded to the service's listener."""
        integration = apigw.Integration(
            type=apigw.IntegrationType.HTTP_PROXY,
            integration_http_method="ANY",
            uri=f"http://{self.load_balancer.load_balancer_dns_name}:{spec.port}/{{proxy}}",
            options=apigw.IntegrationOptions(
                connection_type=apigw.ConnectionType.VPC_LINK,
                vpc_link=self.vpc_link,
                request_parameters={"integration.request.path.proxy": "method.request.path.proxy"},
                timeout=Duration.seconds(29),
            ),
        )
        proxy = self.rest_api.root.add_resource(spec.name).add_resource("{proxy+}")
        method = proxy.add_method(
            "ANY",
            integration,
            api_key_required=True,
            request_parameters={"method.request.path.proxy": True},
            request_validator=validator,
        )
        Validations.of(method).acknowledge(
            Acknowledgment(
                id="AwsSolutions-APIG4",
                reason="Callers authenticate with an API key (the usage plan meters and "
                "throttles each key; the services check the same key): the issue asks for API "
                "keys, and the callers are devices and the Bedrock agent's users, not IAM or "
                "Cognito identities.",
            ),
            Acknowledgment(
                id="AwsSolutions-COG4",
                reason="No Cognito user pool: callers authenticate with API keys (see APIG4).",
            ),
        )

    def _web_acl(self) -> wafv2.CfnWebACL:
        config = self._config
        rate_limit = max(100, 2 * config.api_rate_limit * WAF_WINDOW_S)
        acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            name=f"{config.prefix}-api",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility(f"{config.prefix}-api"),
            rules=[
                wafv2.CfnWebACL.RuleProperty(
                    name="common",
                    priority=0,
                    override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                            vendor_name="AWS",
                            name="AWSManagedRulesCommonRuleSet",
                            # Its 8 KB body cap would refuse batches of readings: the
                            # services take up to 6 MiB and answer 413 beyond.
                            rule_action_overrides=[
                                wafv2.CfnWebACL.RuleActionOverrideProperty(
                                    name="SizeRestrictions_BODY",
                                    action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}),
                                )
                            ],
                        )
                    ),
                    visibility_config=_visibility("common"),
                ),
                wafv2.CfnWebACL.RuleProperty(
                    name="rate-per-address",
                    priority=1,
                    action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            limit=rate_limit,
                            aggregate_key_type="IP",
                            evaluation_window_sec=WAF_WINDOW_S,
                        )
                    ),
                    visibility_config=_visibility("rate-per-address"),
                ),
            ],
        )
        wafv2.CfnWebACLAssociation(
            self,
            "WebAclAssociation",
            resource_arn=self.rest_api.deployment_stage.stage_arn,
            web_acl_arn=acl.attr_arn,
        )
        return acl


def _visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
    )
