"""The chat page (chatstack/web, no build step) on a private S3 bucket behind CloudFront.

- Origin Access Control: only this distribution may read the bucket (a bucket policy conditioned on
  the distribution's ARN), every public access block on
  (https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/private-content-restricting-access-to-s3.html).
- Response headers policy: the page's Content-Security-Policy (its scripts are files, never inline)
  plus HSTS, nosniff, no framing and no referrer, so model output that slips past the sanitizer
  still cannot run or call out.
- `static/config.json` tells the page where the APIs are and, with a Cognito pool, how to sign in:
  the authorization-code flow with PKCE through the hosted UI, the app client's callback set to this
  distribution (https://docs.aws.amazon.com/cognito/latest/developerguide/using-pkce-in-authorization-code.html).
- WAF: `web_acl="create"` adds a CloudFront-scope web ACL (AWS managed common, known-bad-inputs and
  IP-reputation rules plus a per-IP rate limit); CloudFront-scope ACLs exist only in us-east-1
  (https://docs.aws.amazon.com/waf/latest/developerguide/how-aws-waf-works-resources.html), so in
  other regions pass the ARN of one made there, or "none".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from cdk.nag import acknowledge, managed_policy, wildcard

PAGE_DIR = Path(__file__).resolve().parents[2] / "chatstack" / "web"
RATE_LIMIT_PER_5_MIN = 2000
_MANAGED_RULES = ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet",
                  "AWSManagedRulesAmazonIpReputationList")


def content_security_policy(connect: list[str], sign_in: str | None) -> str:
    """What the page may load and call: its own files, the APIs and the sign-in service, nothing else."""
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src " + " ".join(["'self'", *connect]),
        "form-action 'self'" + (f" {sign_in}" if sign_in else ""),
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ])


class WebHosting(Construct):
    """`url` is the page's address; `distribution`, `bucket` and `web_acl_arn` for the stack to use."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        api_base: str,
        websocket_url: str,
        user_pool: cognito.UserPool | None = None,
        client: cognito.UserPoolClient | None = None,
        issuer_url: str | None = None,
        hosted_ui_prefix: str | None = None,
        web_acl: str = "none",
        page_dir: Path = PAGE_DIR,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        logs = s3.Bucket(
            self,
            "Logs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            # CloudFront standard logging writes with the awslogsdelivery account's ACL.
            object_ownership=s3.ObjectOwnership.OBJECT_WRITER,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        # The page is code, rebuilt by every deploy: nothing in it is data worth keeping.
        self.bucket = s3.Bucket(
            self,
            "Page",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=False,
            server_access_logs_bucket=logs,
            server_access_logs_prefix="s3/",
            removal_policy=RemovalPolicy.DESTROY,
            auto_delete_objects=True,
        )
        self.web_acl_arn = self._web_acl(web_acl, stack)

        domain = None
        if user_pool is not None:
            if client is None or issuer_url is None or hosted_ui_prefix is None:
                raise ValueError("Sign-in needs the user pool's client, issuer URL and a hosted UI prefix.")
            domain = user_pool.add_domain(
                "HostedUi", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=hosted_ui_prefix)
            )
        sign_in = domain.base_url() if domain is not None else None
        # The page fetches the issuer's discovery document and posts to the hosted UI's token endpoint.
        connect = [api_base, websocket_url, *([issuer_url, sign_in] if sign_in and issuer_url else [])]
        headers = cloudfront.ResponseHeadersPolicy(
            self,
            "Headers",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=content_security_policy(connect, sign_in),
                    override=True,
                ),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
                frame_options=cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption.DENY, override=True
                ),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy.NO_REFERRER, override=True
                ),
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=Duration.days(365), include_subdomains=True, override=True
                ),
            ),
        )
        self.distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment="chatstack chat page",
            default_root_object="index.html",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                response_headers_policy=headers,
            ),
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
            enable_logging=True,
            log_bucket=logs,
            log_file_prefix="cloudfront/",
            web_acl_id=self.web_acl_arn,
        )
        self.url = f"https://{self.distribution.distribution_domain_name}/"

        page_config: dict[str, Any] = {"apiBase": api_base, "wsUrl": websocket_url}
        if sign_in is not None and client is not None:
            self._enable_code_flow(client, self.url)
            page_config["oidc"] = {
                "issuer": issuer_url,
                "clientId": client.user_pool_client_id,
                "scope": "openid email",
                "logoutUrl": sign_in + "/logout",
            }
        s3deploy.BucketDeployment(
            self,
            "Deploy",
            destination_bucket=self.bucket,
            sources=[
                s3deploy.Source.asset(
                    str(page_dir), exclude=["*.py", "__pycache__", "static/config.json"]
                ),
                s3deploy.Source.json_data("static/config.json", page_config),
            ],
            # Files keep their names between releases (no build step): browsers revalidate each one.
            cache_control=[s3deploy.CacheControl.no_cache()],
            distribution=self.distribution,
            distribution_paths=["/*"],
        )
        CfnOutput(self, "PageUrl", value=self.url, description="The chat page")
        self._acknowledge(logs)

    @staticmethod
    def _enable_code_flow(client: cognito.UserPoolClient, url: str) -> None:
        """The hosted UI's authorization-code flow on the pool's app client (no secret: PKCE instead),
        returning to this page only."""
        cfn = client.node.default_child
        assert isinstance(cfn, cognito.CfnUserPoolClient)
        cfn.add_property_override("AllowedOAuthFlowsUserPoolClient", True)
        cfn.add_property_override("AllowedOAuthFlows", ["code"])
        cfn.add_property_override("AllowedOAuthScopes", ["openid", "email"])
        cfn.add_property_override("SupportedIdentityProviders", ["COGNITO"])
        cfn.add_property_override("CallbackURLs", [url])
        cfn.add_property_override("LogoutURLs", [url])

    def _web_acl(self, web_acl: str, stack: Stack) -> str | None:
        if web_acl == "none":
            return None
        if web_acl != "create":
            if not web_acl.startswith("arn:"):
                raise ValueError("web_acl is 'none', 'create' or the ARN of a CloudFront-scope web ACL.")
            return web_acl
        if stack.region != "us-east-1":
            raise ValueError(
                f"A CloudFront web ACL can only be created in us-east-1, not {stack.region}: "
                "create it there and pass its ARN."
            )

        def managed(priority: int, name: str) -> wafv2.CfnWebACL.RuleProperty:
            return wafv2.CfnWebACL.RuleProperty(
                name=name,
                priority=priority,
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS", name=name
                    )
                ),
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                visibility_config=_visibility(name),
            )

        rate = wafv2.CfnWebACL.RuleProperty(
            name="RatePerIp",
            priority=len(_MANAGED_RULES),
            statement=wafv2.CfnWebACL.StatementProperty(
                rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                    limit=RATE_LIMIT_PER_5_MIN, aggregate_key_type="IP"
                )
            ),
            action=wafv2.CfnWebACL.RuleActionProperty(block={}),
            visibility_config=_visibility("RatePerIp"),
        )
        acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="CLOUDFRONT",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            rules=[*(managed(i, name) for i, name in enumerate(_MANAGED_RULES)), rate],
            visibility_config=_visibility("chatstack-page"),
        )
        return acl.attr_arn

    def _acknowledge(self, logs: s3.Bucket) -> None:
        acknowledge(logs, [{
            "id": "AwsSolutions-S1",
            "reason": "This is the access-log bucket itself; logging it into itself would loop.",
        }])
        acknowledge(self.distribution, [
            {"id": "AwsSolutions-CFR1", "reason": "The page is public by design; geographic "
             "restrictions are a per-deployment business decision, not a default."},
            {"id": "AwsSolutions-CFR4", "reason": "The default CloudFront certificate only allows "
             "TLSv1 as its floor; a custom domain with its own certificate raises it to TLS 1.2."},
            {"id": "AwsSolutions-CFR2", "reason": "WAF is an option of this construct (web_acl): a "
             "CloudFront web ACL must be made in us-east-1 and costs money while idle."},
        ])
        # The functions CDK adds beside this construct, at stack level, to copy the page into the
        # bucket and to empty it at teardown: acknowledged on them only, never on the whole stack.
        stack = Stack.of(self)
        page = stack.get_logical_id(self.bucket.node.default_child)  # type: ignore[arg-type]
        deployment_wildcards = [
            *(f"Action::s3:{verb}*" for verb in ("GetObject", "GetBucket", "List", "DeleteObject", "Abort")),
            f"Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-{stack.account}-{stack.region}/*",
            f"Resource::<{page}.Arn>/*",
            "Resource::*",  # cloudfront:CreateInvalidation takes no resource narrower than *
        ]
        for child in stack.node.children:
            if child.node.id.startswith(("Custom::CDKBucketDeployment", "Custom::S3AutoDeleteObjects")):
                acknowledge(child, [
                    {"id": managed_policy("service-role/AWSLambdaBasicExecutionRole"), "reason": "CDK's "
                     "bucket-deployment and auto-delete functions log through the basic execution role."},
                    *({"id": wildcard(finding), "reason": "CDK's bucket-deployment function reads the "
                       "asset bucket, replaces the page bucket's objects and invalidates the page's cache."}
                      for finding in deployment_wildcards),
                    {"id": "AwsSolutions-L1", "reason": "The runtime of CDK's own custom-resource "
                     "functions is chosen by the aws-cdk-lib release, not by this project."},
                ])

def _visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
    )
