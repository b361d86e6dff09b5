"""Rules from AWS documentation that offline linters (cfn-lint, cdk-nag) do not check, one test per
defect class found by reviewing the synthesized templates (issue 10). Each names the rule and its
source; each fails on the templates as they were before the fix (see the comment in each test).
"""

from __future__ import annotations

import json
import re
from typing import Any

import botocore.session

from cdk.constructs.aurora_primary import MASTER_USERNAME
from cdk.constructs.chat_functions import lambda_handler_path
from cdk.gpu_drivers import DEFAULT_DRIVER_CUDA, INFERENCE_AMI_CUDA, image_cuda
from infra_tests.conftest import Synth
from infra_tests.helpers import as_list, referenced_ids, render, statements
from lambdas import wiring


def test_a_group_joining_the_global_datastore_sets_no_encryption_flags(synth: Synth) -> None:
    """ElastiCache: a replication group created with GlobalReplicationGroupId takes engine, version,
    node type and encryption from the Global Datastore's primary; AtRestEncryptionEnabled,
    TransitEncryptionEnabled or TransitEncryptionMode on it fail with InvalidParameterCombination.
    Source: https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-elasticache-replicationgroup.html
    (GlobalReplicationGroupId) and awsdocs/aws-cloudformation-user-guide PR #1117.
    Before the fix the us-west-2 group set all three flags."""
    forbidden = ("AtRestEncryptionEnabled", "TransitEncryptionEnabled", "TransitEncryptionMode")
    joining = [
        (stack, group["Properties"])
        for stack, _, group in synth.all_resources("AWS::ElastiCache::ReplicationGroup")
        if "GlobalReplicationGroupId" in group["Properties"]
    ]
    assert len(joining) == len(synth.config.secondary_regions)
    for stack, props in joining:
        assert not [key for key in forbidden if key in props], stack
        assert props["KmsKeyId"], f"{stack}: the member keeps its own region's key"
        # Unconfirmed whether ElastiCache refuses AutomaticFailoverEnabled on a joining group; a member's
        # is governed by the Global Datastore (terraform-provider-aws issues #38557 and #47644: AWS
        # rejects changing it on a member), and the Terraform AWS provider sends it only for a group
        # that joins nothing (replication_group.go, resourceReplicationGroupCreate) while its acceptance
        # test TestAccElastiCacheReplicationGroup_GlobalReplicationGroupID_full creates a Multi-AZ
        # secondary that way. So the member leaves it out (cdk/constructs/valkey_cache.py).
        assert "AutomaticFailoverEnabled" not in props, stack
    primary = synth.stack(synth.config.primary_region, "data")
    (founder,) = [
        g["Properties"] for g in synth.resources(primary, "AWS::ElastiCache::ReplicationGroup").values()
    ]
    assert founder["AtRestEncryptionEnabled"] is True and founder["TransitEncryptionEnabled"] is True
    assert founder["AutomaticFailoverEnabled"] is True
    (datastore,) = synth.resources(primary, "AWS::ElastiCache::GlobalReplicationGroup").values()
    assert datastore["Properties"]["AutomaticFailoverEnabled"] is True, "members fail over in-region"


def test_the_lmi_image_cuda_runs_on_the_variants_driver(synth: Synth) -> None:
    """SageMaker hosting: ml.g5 endpoints default to NVIDIA driver 470 (CUDA 11.4); an image built for a
    newer CUDA needs ProductionVariant.InferenceAmiVersion naming an AMI whose driver supports it.
    Source: https://docs.aws.amazon.com/sagemaker/latest/dg/inference-gpu-drivers.html and
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariant.html.
    Before the fix the variant had no InferenceAmiVersion under a cu130 image."""
    for region in synth.config.regions:
        inference = synth.stack(region, "inference")
        models = synth.resources(inference, "AWS::SageMaker::Model")
        for config_id, config in synth.resources(inference, "AWS::SageMaker::EndpointConfig").items():
            for variant in config["Properties"]["ProductionVariants"]:
                if not variant["InstanceType"].startswith(("ml.g", "ml.p")):
                    continue
                images = [
                    m["Properties"]["PrimaryContainer"]["Image"]
                    for m_id, m in models.items()
                    if m_id.split("Model")[0] == config_id.split("Config")[0]
                ]
                assert images, config_id
                cuda = image_cuda(images[0])
                assert cuda is not None, images[0]
                ami = variant.get("InferenceAmiVersion")
                supported = INFERENCE_AMI_CUDA[ami][1] if ami else DEFAULT_DRIVER_CUDA
                assert cuda <= supported, f"{region} {config_id}: CUDA {cuda} on {ami or 'default'}"


def test_the_driver_table_matches_botocores_documentation() -> None:
    """The AMI -> driver/CUDA table is the one SageMaker documents for InferenceAmiVersion
    (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariant.html)."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    member = model.shape_for("ProductionVariant").members["InferenceAmiVersion"]
    text = re.sub(r"<[^>]+>", " ", member.documentation)
    assert set(INFERENCE_AMI_CUDA) <= set(member.enum)
    for ami, (driver, (major, minor)) in INFERENCE_AMI_CUDA.items():
        found = re.search(
            re.escape(ami) + r"\s+Accelerator: GPU\s+NVIDIA driver version: (\d+)\s+CUDA version: ([\d.]+)",
            text,
        )
        assert found, ami
        assert int(found.group(1)) == driver and found.group(2) == f"{major}.{minor}", ami


def test_the_model_weights_come_from_s3_and_no_container_holds_a_hub_token(synth: Synth) -> None:
    """LMI loads `HF_MODEL_ID` from an s3:// prefix without the hub; a gated hub model needs a token,
    and a token in a SageMaker model's Environment is readable by anyone allowed DescribeModel.
    Source: https://docs.djl.ai/master/docs/serving/serving/docs/lmi/deployment_guide/configurations.html
    and https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ContainerDefinition.html.
    Before the fix the example loaded meta-llama weights from the hub with no token."""
    for region in synth.config.regions:
        inference = synth.stack(region, "inference")
        for _, model in synth.resources(inference, "AWS::SageMaker::Model").items():
            env = model["Properties"]["PrimaryContainer"].get("Environment", {})
            assert "HF_TOKEN" not in env and "HUGGING_FACE_HUB_TOKEN" not in env
        lmi = [
            m for k, m in synth.resources(inference, "AWS::SageMaker::Model").items() if k.startswith("Llm")
        ]
        (model,) = lmi
        uri = model["Properties"]["PrimaryContainer"]["Environment"]["HF_MODEL_ID"]
        assert uri.startswith("s3://") and region in uri, uri


def _http_api_routes(synth: Synth, region: str) -> tuple[dict[str, Any], dict[str, Any]]:
    api = synth.stack(region, "api")
    (rest_api_id,) = [
        k
        for k, v in synth.resources(api, "AWS::ApiGatewayV2::Api").items()
        if v["Properties"].get("ProtocolType") == "HTTP"
    ]
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in synth.resources(api, "AWS::ApiGatewayV2::Route").values()
        if referenced_ids(r["Properties"]["ApiId"]) == {rest_api_id}
    }
    authorizers = synth.resources(api, "AWS::ApiGatewayV2::Authorizer")
    return routes, authorizers


def test_the_rest_authorizer_admits_every_credential_the_app_accepts(synth: Synth) -> None:
    """API Gateway HTTP APIs: a JWT authorizer answers 401 before the integration when its identity
    source is missing, so a caller sending only `x-api-key` (which the app accepts, lambdas/api/deps.py)
    never reaches it; a Lambda REQUEST authorizer with identity sources refuses a request lacking any
    of them. So: a Lambda authorizer, no identity source, no caching (a revoked key must not stay valid).
    Sources: https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-jwt-authorizer.html,
    https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-lambda-authorizer.html.
    Before the fix `/v1/{proxy+}` had a JWT authorizer on $request.header.Authorization."""
    for region in synth.config.regions:
        routes, authorizers = _http_api_routes(synth, region)
        route = routes["ANY /v1/{proxy+}"]
        assert route["AuthorizationType"] == "CUSTOM", region
        (authorizer_id,) = referenced_ids(route["AuthorizerId"])
        authorizer = authorizers[authorizer_id]["Properties"]
        assert authorizer["AuthorizerType"] == "REQUEST"
        assert authorizer["AuthorizerPayloadFormatVersion"] == "2.0" and authorizer["EnableSimpleResponses"]
        assert not authorizer.get("IdentitySource"), region
        assert authorizer["AuthorizerResultTtlInSeconds"] == 0
        function_ids = referenced_ids(authorizer["AuthorizerUri"])
        api = synth.stack(region, "api")
        handlers = {api["Resources"][f]["Properties"]["Handler"] for f in function_ids}
        assert handlers == {wiring.HTTP_AUTHORIZER.handler.replace(":", ".")}


def test_cognito_tokens_carry_the_claims_the_service_reads(synth: Synth) -> None:
    """Cognito emits custom attributes as `custom:NAME` in ID tokens only; claims of your own in access
    tokens need a Pre Token Generation trigger with event version V2_0, which needs the Essentials or
    Plus feature plan. The service reads `tenant` and `scope` (lambdas/config.py).
    Source: https://docs.aws.amazon.com/cognito/latest/developerguide/user-pool-lambda-pre-token-generation.html.
    Before the fix the pool had no trigger and every Cognito token was refused."""
    from lambdas.config import Settings
    from lambdas.handlers.pre_token import SCOPE_GROUPS

    identity = synth.templates[f"{synth.config.name}-{synth.config.primary_region}-identity"]
    (pool,) = synth.resources(identity, "AWS::Cognito::UserPool").values()
    props = pool["Properties"]
    assert props["UserPoolTier"] in {"ESSENTIALS", "PLUS"}
    trigger = props["LambdaConfig"]["PreTokenGenerationConfig"]
    assert trigger["LambdaVersion"] == "V2_0"
    (function_id,) = referenced_ids(trigger["LambdaArn"])
    function = identity["Resources"][function_id]["Properties"]
    assert function["Handler"] == wiring.PRE_TOKEN.handler.replace(":", ".")
    env = function["Environment"]["Variables"]
    settings = Settings()
    assert env["CHATSTACK_AUTH_TENANT_CLAIM"] == settings.auth_tenant_claim
    assert env["CHATSTACK_AUTH_SCOPES_CLAIM"] == settings.auth_scopes_claim
    groups = {
        g["Properties"]["GroupName"]
        for g in synth.resources(identity, "AWS::Cognito::UserPoolGroup").values()
    }
    assert groups == set(SCOPE_GROUPS)
    assert any(a["Name"] == "tenant" for a in props["Schema"])
    for client in synth.resources(identity, "AWS::Cognito::UserPoolClient").values():
        assert "custom:tenant" not in client["Properties"]["WriteAttributes"], "users must not move tenants"
    for region in synth.config.regions:
        for fn in synth.resources(synth.stack(region, "api"), "AWS::Lambda::Function").values():
            variables = fn["Properties"].get("Environment", {}).get("Variables", {})
            if "CHATSTACK_AUTH_ISSUER" in variables:
                assert variables["CHATSTACK_AUTH_TENANT_CLAIM"] == settings.auth_tenant_claim
                assert variables["CHATSTACK_AUTH_SCOPES_CLAIM"] == settings.auth_scopes_claim


def test_each_regions_health_check_proves_what_its_role_can_do(synth: Synth) -> None:
    """Route 53 failover: while the SECONDARY record's health check is unhealthy, Route 53 answers with
    the primary whatever the primary's health, so a standby check that needs a database writer (which
    an Aurora Global Database secondary lacks: its RDS Proxy read/write endpoint has no target) means
    failover never happens. The secondary's check targets /readyz, which reads through the proxy's
    READ_ONLY endpoint. Sources: https://docs.aws.amazon.com/Route53/latest/APIReference/API_ResourceRecordSet.html
    (Failover) and https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/rds-proxy-gdb.html.
    Before the fix every region's check was /healthz (SELECT 1 through the read/write endpoint)."""
    for region in synth.config.regions:
        primary = synth.config.is_primary(region)
        routing = synth.stack(region, "routing")
        (check,) = synth.resources(routing, "AWS::Route53::HealthCheck").values()
        path = check["Properties"]["HealthCheckConfig"]["ResourcePath"]
        records = synth.resources(routing, "AWS::Route53::RecordSet").values()
        assert {r["Properties"]["Failover"] for r in records} == {"PRIMARY" if primary else "SECONDARY"}
        if primary:
            assert path == "/healthz"
            continue
        assert path == "/readyz", region
        routes, _ = _http_api_routes(synth, region)
        assert routes["GET /readyz"]["AuthorizationType"] == "NONE"
        data = synth.stack(region, "data")
        readers = {
            k
            for k, v in synth.resources(data, "AWS::RDS::DBProxyEndpoint").items()
            if v["Properties"]["TargetRole"] == "READ_ONLY"
        }
        assert readers, region
        api = synth.stack(region, "api")
        (rest,) = [
            f["Properties"]
            for f in synth.resources(api, "AWS::Lambda::Function").values()
            if f["Properties"].get("Handler") == wiring.REST_API.handler.replace(":", ".")
        ]
        reader_host = render(rest["Environment"]["Variables"]["CHATSTACK_DATABASE_READER_HOST"])
        assert any(reader in reader_host for reader in readers), reader_host


def test_no_stack_holds_a_strong_cross_region_reference(synth: Synth) -> None:
    """CloudFormation exports work within one region; CDK's `crossRegionReferences` emulates them with
    an SSM-backed writer/reader pair that refuses to change an exported value while another stack
    imports it, and a consumer's deploy then drags its producer along. Values cross regions here as
    SSM parameters read at deploy time (cdk/constructs/regional_value.py), so each region's stacks
    update on their own. Sources: https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/outputs-section-structure.html
    (exports are regional) and https://docs.aws.amazon.com/cdk/api/v2/docs/aws-cdk-lib-readme.html
    (Accessing resources in a different stack and region: "crossRegionReferences").
    Before the fix the primary data and identity stacks held Custom::CrossRegionExportWriter resources."""
    strong = [
        (stack, logical_id)
        for stack, template in synth.templates.items()
        for logical_id, resource in template["Resources"].items()
        if resource["Type"].startswith("Custom::CrossRegionExport")
    ]
    assert not strong
    # What remains is deploy order: a reader's stack deploys after the stack that publishes.
    manifest = json.loads((synth.directory / "manifest.json").read_text(encoding="utf-8"))
    depends = {k: set(v.get("dependencies", [])) for k, v in manifest["artifacts"].items()}
    name, primary = synth.config.name, synth.config.primary_region
    for region in synth.config.secondary_regions:
        assert f"{name}-{primary}-data" in depends[f"{name}-{region}-data"]
        assert {f"{name}-{primary}-data", f"{name}-{primary}-identity"} <= depends[f"{name}-{region}-api"]
    for stack, template in synth.templates.items():
        region = next(r for r in synth.config.regions if f"-{r}-" in stack)
        for reader in (r for r in template["Resources"].values() if r["Type"] == "Custom::AWS"):
            call = str(reader["Properties"]["Create"]).replace(" ", "")
            # Readers exist only to reach another region's parameter.
            assert '"action":"GetParameter"' in call and f'"region":"{region}"' not in call, stack
            # CloudFormation sends a custom resource an Update only when its properties change
            # (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requesttypes-update.html),
            # so a reader whose properties never change keeps its first value for ever: a replaced
            # API, app client or collection in the owner region never reached the others. Each
            # reader carries the synthesis's time, so every deploy reads again.
            assert reader["Properties"].get("ReadAt") == synth.read_at, stack


def test_no_function_is_granted_the_database_master_secret(synth: Synth) -> None:
    """Least privilege: functions reach Aurora through RDS Proxy with IAM authentication
    (`rds-db:connect` as one database user); only the proxy reads the master secret. A function that
    could read it could also sign in to the cluster directly, bypassing the proxy.
    Source: https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy-connecting.html
    (Connecting to a proxy using IAM authentication) and
    https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAMDBAuth.IAMPolicy.html.
    Before the fix every function's role could read the master secret."""
    for region in synth.config.regions:
        api = synth.stack(region, "api")
        data = synth.stack(region, "data")
        (proxy,) = synth.resources(data, "AWS::RDS::DBProxy").values()
        assert proxy["Properties"]["Auth"][0]["IAMAuth"] == "REQUIRED", region
        roles = {
            f["Properties"]["Role"]["Fn::GetAtt"][0]: f["Properties"]["Handler"]
            for f in synth.resources(api, "AWS::Lambda::Function").values()
            if str(f["Properties"].get("Handler", "")).startswith("lambdas.")
        }
        connects: set[str] = set()
        for policy in synth.resources(api, "AWS::IAM::Policy").values():
            attached = {r["Ref"] for r in policy["Properties"]["Roles"]} & set(roles)
            for statement in statements(policy):
                actions = set(as_list(statement["Action"]))
                rendered = " ".join(render(r) for r in as_list(statement["Resource"]))
                if "secretsmanager:GetSecretValue" in actions:
                    assert "aurora" not in rendered.lower() and "DbSecret" not in rendered, (
                        attached,
                        rendered,
                    )
                    assert "/valkey/" in rendered or "Valkey" in rendered, rendered
                if "rds-db:connect" in actions:
                    assert rendered.endswith(f"/{MASTER_USERNAME}"), rendered
                    connects |= {roles[r] for r in attached}
        assert (
            lambda_handler_path(wiring.WORKER) in connects
            and lambda_handler_path(wiring.PING) not in connects
        )
        for function in synth.resources(api, "AWS::Lambda::Function").values():
            variables = function["Properties"].get("Environment", {}).get("Variables", {})
            assert "CHATSTACK_DATABASE_SECRET_ARN" not in variables
