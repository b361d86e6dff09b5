"""The chat page's hosting (cdk/constructs/web_hosting.py) synthesized on its own, with cdk-nag.

Sources of the rules checked:
- Origin Access Control and its bucket policy: https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/private-content-restricting-access-to-s3.html
- CloudFront-scope web ACLs only in us-east-1: https://docs.aws.amazon.com/waf/latest/developerguide/how-aws-waf-works-resources.html
- Authorization code with PKCE on a public app client: https://docs.aws.amazon.com/cognito/latest/developerguide/using-pkce-in-authorization-code.html
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cdk.app import nag_errors, quiet_node_warnings
from infra_tests.helpers import statements, strings

quiet_node_warnings()

API = "https://api.example.com"
WS = "wss://ws.example.com"


def synth(tmp: Path, *, region: str = "us-east-1", web_acl: str = "none", sign_in: bool = True) -> Any:
    from aws_cdk import App, Environment, Stack, Validations
    from aws_cdk import aws_cognito as cognito
    from cdk_nag import AwsSolutionsChecks

    from cdk.constructs.web_hosting import WebHosting
    from cdk.nag import acknowledge

    app = App(outdir=str(tmp))
    stack = Stack(app, "Web", env=Environment(account="111111111111", region=region))
    kwargs: dict[str, Any] = {}
    if sign_in:
        pool = cognito.UserPool(stack, "Pool")
        acknowledge(pool, [{"id": rule, "reason": "A bare stand-in for the identity stack's pool, which "
                            "carries its own password, MFA and feature-plan settings."}
                           for rule in ("AwsSolutions-COG1", "AwsSolutions-COG2", "AwsSolutions-COG8")])
        kwargs = {"user_pool": pool, "client": pool.add_client("Client"), "hosted_ui_prefix": "chatstack-t",
                  "issuer_url": f"https://cognito-idp.{region}.amazonaws.com/{pool.user_pool_id}"}
    WebHosting(stack, "Page", api_base=API, websocket_url=WS, web_acl=web_acl, **kwargs)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    assembly = app.synth()
    template = json.loads(Path(assembly.get_stack_by_name("Web").template_full_path).read_text())
    return assembly, template


def of_type(template: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [r for r in template["Resources"].values() if r["Type"] == type_]


@pytest.fixture(scope="module")
def hosted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    return synth(tmp_path_factory.mktemp("web"), web_acl="create")  # type: ignore[no-any-return]


def test_the_bucket_is_private_and_only_the_distribution_reads_it_through_oac(hosted: Any) -> None:
    assembly, template = hosted
    assert nag_errors(assembly) == []  # synth also fails on any unacknowledged cdk-nag error
    buckets = of_type(template, "AWS::S3::Bucket")
    assert buckets and all(
        b["Properties"]["PublicAccessBlockConfiguration"] == dict.fromkeys(
            ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True)
        for b in buckets
    )
    [oac] = of_type(template, "AWS::CloudFront::OriginAccessControl")
    assert oac["Properties"]["OriginAccessControlConfig"]["SigningBehavior"] == "always"
    [dist] = of_type(template, "AWS::CloudFront::Distribution")
    config = dist["Properties"]["DistributionConfig"]
    [origin] = config["Origins"]
    assert "OriginAccessControlId" in origin and origin["S3OriginConfig"]["OriginAccessIdentity"] == ""
    assert config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    reads = [s for p in of_type(template, "AWS::S3::BucketPolicy") for s in statements(p)
             if s.get("Principal") == {"Service": "cloudfront.amazonaws.com"}]
    assert reads and all(s["Action"] == "s3:GetObject" and "AWS:SourceArn" in s["Condition"]["StringEquals"]
                         for s in reads)


def test_the_page_gets_a_strict_content_security_policy_and_security_headers(hosted: Any) -> None:
    _, template = hosted
    [policy] = of_type(template, "AWS::CloudFront::ResponseHeadersPolicy")
    security = policy["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    csp = " ".join(strings(security["ContentSecurityPolicy"]))
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert API in csp and WS in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert security["FrameOptions"]["FrameOption"] == "DENY"
    assert security["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31_536_000


def test_sign_in_uses_the_code_flow_back_to_the_page_and_the_page_is_told_the_issuer(hosted: Any) -> None:
    assembly, template = hosted
    [client] = of_type(template, "AWS::Cognito::UserPoolClient")
    props = client["Properties"]
    assert props["AllowedOAuthFlows"] == ["code"] and props["AllowedOAuthFlowsUserPoolClient"] is True
    assert props.get("GenerateSecret") in (None, False)  # a browser cannot keep a secret: PKCE instead
    assert "implicit" not in json.dumps(props)
    callback = json.dumps(props["CallbackURLs"])
    assert "DomainName" in callback  # the distribution's own address
    assert of_type(template, "AWS::Cognito::UserPoolDomain")
    [deploy] = of_type(template, "Custom::CDKBucketDeployment")
    assert deploy["Properties"]["DistributionPaths"] == ["/*"]
    # The generated static/config.json, its deploy-time values filled in as the deployment will.
    outdir = Path(assembly.directory)
    [config_file] = list(outdir.glob("asset.*/static/config.json"))
    text = config_file.read_text()
    for markers in deploy["Properties"]["SourceMarkers"]:
        for marker, value in markers.items():
            text = text.replace(marker, render(value))
    config = json.loads(text)
    assert config["apiBase"] == API and config["wsUrl"] == WS
    oidc = config["oidc"]
    assert oidc["issuer"].startswith("https://cognito-idp.us-east-1.amazonaws.com/{Pool")
    assert oidc["clientId"].startswith("{PoolClient") and "openid" in oidc["scope"]
    assert oidc["logoutUrl"].endswith(".auth.us-east-1.amazoncognito.com/logout")
    # The page itself, without the Python package files or the local (empty) config.
    [page] = [d for d in outdir.glob("asset.*") if (d / "index.html").exists()]
    assert (page / "static" / "app.js").exists()
    assert (page / "static" / "vendor" / "marked.LICENSE.txt").exists()
    assert not list(page.rglob("*.py")) and not (page / "static" / "config.json").exists()


def render(value: Any) -> str:
    """A Fn::Join of strings and Refs as text, each Ref shown as `{LogicalId}`."""
    if isinstance(value, str):
        return str(value)
    if "Ref" in value:
        return "{" + str(value["Ref"]) + "}"
    separator, parts = value["Fn::Join"]
    return str(separator).join(render(p) for p in parts)

def test_the_waf_option_adds_managed_rules_and_a_rate_limit_and_only_in_us_east_1(
    hosted: Any, tmp_path: Path
) -> None:
    _, template = hosted
    [acl] = of_type(template, "AWS::WAFv2::WebACL")
    assert acl["Properties"]["Scope"] == "CLOUDFRONT"
    rules = acl["Properties"]["Rules"]
    names = {r["Statement"].get("ManagedRuleGroupStatement", {}).get("Name") for r in rules}
    assert {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"} <= names
    assert any("RateBasedStatement" in r["Statement"] for r in rules)
    [dist] = of_type(template, "AWS::CloudFront::Distribution")
    assert "WebACLId" in dist["Properties"]["DistributionConfig"]
    with pytest.raises(ValueError, match="us-east-1"):
        synth(tmp_path / "eu", region="eu-west-1", web_acl="create", sign_in=False)
    _, plain = synth(tmp_path / "plain", region="eu-west-1", sign_in=False)
    assert not of_type(plain, "AWS::WAFv2::WebACL") and not of_type(plain, "AWS::Cognito::UserPoolDomain")
