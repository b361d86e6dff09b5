"""`chatstack up --as-deployed cdk.out/`: the local service configured by the synthesized templates.

What comes from the templates of the primary region (cdk.out/manifest.json names the stacks):
- every Lambda function's environment variables, memory size and timeout (matched to the wiring
  module by its handler path);
- the WebSocket API's routes (route key -> function) and its `$connect` authorizer;
- the HTTP API's routes and their authorizers, as configured: JWT (issuer, audiences, identity
  source) or Lambda REQUEST (function, identity sources, payload version, simple responses);
- the Cognito user pool: its client id, custom attributes and the Pre Token Generation trigger
  (function and event version).
Resource references (Ref, Fn::GetAtt, Fn::ImportValue, Fn::Join, Fn::Sub, SSM parameters and CDK's
cross-region export readers) are resolved through the templates down to a resource, and each resource
is mapped to its local stand-in by type (`StandIns`). A reference to a resource type without a
stand-in is an error that names it, so a template change the local runtime cannot honour fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lambdas import wiring

URL_SUFFIX = "amazonaws.com"
# Sentinels for resources whose local stand-in is not a string inside the cloud value (a database
# reached through a URL with credentials instead of host + secret); the env mapping replaces them.
DB, CACHE, SECRET, COLLECTION, WS_API = "@db@", "@cache@", "@secret@", "@collection@", "@wsapi@"


class TemplateError(Exception):
    """The templates cannot be run locally as deployed; the message says which resource and why."""


@dataclass(frozen=True, slots=True)
class Template:
    stack: str
    region: str
    account: str
    resources: dict[str, Any]
    outputs: dict[str, Any]

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.resources.items() if r.get("Type") == kind}


@dataclass(frozen=True, slots=True)
class DeployedFunction:
    spec: wiring.Function  # the wiring entry with the template's memory and timeout
    logical_id: str
    environment: dict[str, Any]  # raw template values (intrinsics unresolved)


@dataclass(frozen=True, slots=True)
class Authorizer:
    kind: str  # "JWT" | "REQUEST"
    identity_sources: tuple[str, ...]
    function: str = ""  # wiring name of a Lambda authorizer
    issuer: str = ""
    audiences: tuple[str, ...] = ()
    payload_version: str = "2.0"
    simple_responses: bool = False
    cache_ttl_s: int = 0


@dataclass(frozen=True, slots=True)
class HttpRoute:
    method: str  # "ANY" or an HTTP method
    path: str  # "/v1/{proxy+}"
    function: str
    authorizer: Authorizer | None

    def matches(self, method: str, path: str) -> bool:
        if self.method not in ("ANY", method.upper()):
            return False
        pattern = re.sub(r"\\\{[^/]+?\\\+\\\}", ".+", re.escape(self.path))
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", pattern)
        return re.fullmatch(pattern, path) is not None


@dataclass(frozen=True, slots=True)
class UserPool:
    pool_id: str
    client_id: str
    custom_attributes: tuple[str, ...]
    trigger_function: str  # wiring name of the pre-token trigger, "" when none is configured
    trigger_version: str  # "V1_0" | "V2_0" | "V3_0" | ""
    trigger_spec: wiring.Function | None = None  # with the trigger's own memory and timeout
    password_policy: dict[str, Any] = field(default_factory=dict)  # Policies.PasswordPolicy


@dataclass
class Deployment:
    region: str
    functions: dict[str, DeployedFunction]
    ws_routes: dict[str, str]  # route key -> function name
    ws_authorizer: Authorizer | None
    http_routes: list[HttpRoute]
    user_pool: UserPool | None
    templates: dict[str, Template] = field(repr=False, default_factory=dict)

    def http_route(self, method: str, path: str) -> HttpRoute | None:
        # API Gateway picks the most specific route; routes without a greedy path win over `{proxy+}`.
        ordered = sorted(self.http_routes, key=lambda r: ("+}" in r.path, r.method == "ANY"))
        return next((r for r in ordered if r.matches(method, path)), None)


# ---- reading the cloud assembly ------------------------------------------------------------------
def load_templates(cdk_out: Path) -> dict[str, Template]:
    manifest_path = cdk_out / "manifest.json"
    if not manifest_path.is_file():
        raise TemplateError(f"{cdk_out} has no manifest.json; run `make synth` first.")
    manifest = json.loads(manifest_path.read_text())
    templates: dict[str, Template] = {}
    for name, artifact in manifest.get("artifacts", {}).items():
        if artifact.get("type") != "aws:cloudformation:stack":
            continue
        _, _, account_region = str(artifact.get("environment", "")).partition("aws://")
        account, _, region = account_region.partition("/")
        body = json.loads((cdk_out / artifact["properties"]["templateFile"]).read_text())
        stack = artifact["properties"].get("stackName") or name
        resources, outputs = body.get("Resources", {}), body.get("Outputs", {})
        templates[stack] = Template(stack, region, account, resources, outputs)
    return templates


def primary_region(templates: dict[str, Template]) -> str:
    """The region of the first stack holding a user pool (Cognito lives in the primary), else the first."""
    for template in templates.values():
        if template.of_type("AWS::Cognito::UserPool"):
            return template.region
    if not templates:
        raise TemplateError("The cloud assembly holds no stacks.")
    return next(iter(templates.values())).region


class Resolver:
    """Evaluates CloudFormation intrinsics across the assembly; resources go to `stand_in`."""

    def __init__(
        self, templates: dict[str, Template], stand_in: Callable[[Template, str, str | None], str]
    ) -> None:
        self.templates = templates
        self.stand_in = stand_in
        self.exports = {
            self.resolve(t, o["Export"]["Name"]): (t, o["Value"])
            for t in templates.values()
            for o in t.outputs.values()
            if isinstance(o, dict) and "Export" in o
        }

    def resolve(self, t: Template, value: Any) -> str:
        if isinstance(value, str):
            return self._dynamic(t, value)
        if isinstance(value, bool | int | float):
            return json.dumps(value)
        if not isinstance(value, dict) or len(value) != 1:
            raise TemplateError(f"{t.stack}: cannot evaluate {json.dumps(value)[:200]}")
        (fn, arg), = value.items()
        if fn == "Ref":
            return self._ref(t, str(arg))
        if fn == "Fn::GetAtt":
            logical, attribute = (arg.split(".", 1) if isinstance(arg, str) else arg)
            return self._resource(t, str(logical), self.resolve(t, attribute))
        if fn == "Fn::ImportValue":
            name = self.resolve(t, arg)
            if name not in self.exports:
                raise TemplateError(f"{t.stack}: no stack exports {name!r}")
            source, exported = self.exports[name]
            return self.resolve(source, exported)
        if fn == "Fn::Join":
            separator, parts = arg
            return str(separator).join(self.resolve(t, p) for p in parts)
        if fn == "Fn::Select":
            index, items = arg
            return self.resolve(t, items[int(self.resolve(t, index))])
        if fn == "Fn::Sub":
            text, names = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            return re.sub(r"\$\{([^}!]+)\}", lambda m: self._sub(t, m.group(1), names), text)
        raise TemplateError(f"{t.stack}: {fn} has no local evaluation")

    def _sub(self, t: Template, name: str, names: dict[str, Any]) -> str:
        if name in names:
            return self.resolve(t, names[name])
        if "." in name and not name.startswith("AWS::"):
            logical, attribute = name.split(".", 1)
            return self._resource(t, logical, attribute)
        return self._ref(t, name)

    def _ref(self, t: Template, name: str) -> str:
        pseudo = {
            "AWS::Region": t.region, "AWS::AccountId": t.account, "AWS::Partition": "aws",
            "AWS::URLSuffix": URL_SUFFIX, "AWS::StackName": t.stack, "AWS::NoValue": "",
        }  # fmt: skip
        if name in pseudo:
            return pseudo[name]
        return self._resource(t, name, None)

    def _resource(self, t: Template, logical: str, attribute: str | None) -> str:
        resource = t.resources.get(logical)
        if resource is None:
            raise TemplateError(f"{t.stack}: no resource {logical}")
        kind = resource.get("Type", "")
        props = resource.get("Properties", {})
        if kind == "AWS::SSM::Parameter":
            return self.resolve(t, props["Value"] if attribute == "Value" else props.get("Name", logical))
        if kind == "Custom::CrossRegionExportReader" and attribute:
            return self._cross_region_export(attribute)
        if kind == "Custom::AWS" and attribute == "Parameter.Value":
            # An AwsCustomResource reading an SSM parameter (often another region's) at deploy time.
            call = json.loads(self.resolve(t, props.get("Create") or props.get("Update") or "{}"))
            if call.get("service") == "SSM" and call.get("action") in ("GetParameter", "getParameter"):
                return self._ssm(t, str(call.get("parameters", {}).get("Name", "")))
        return self.stand_in(t, logical, attribute)

    def _ssm(self, t: Template, name: str) -> str:
        for template in self.templates.values():
            for param in template.of_type("AWS::SSM::Parameter").values():
                props = param.get("Properties", {})
                if "Name" in props and self.resolve(template, props["Name"]) == name:
                    return self.resolve(template, props["Value"])
        raise TemplateError(f"{t.stack}: no SSM parameter {name} in the assembly")

    def _cross_region_export(self, parameter: str) -> str:
        """CDK's strong cross-region references: a writer in the producing stack puts the value into an
        SSM parameter that a reader in the consuming stack returns as an attribute named after it."""
        for t in self.templates.values():
            for writer in t.of_type("Custom::CrossRegionExportWriter").values():
                exports = writer.get("Properties", {}).get("WriterProps", {}).get("exports", {})
                if parameter in exports:
                    return self.resolve(t, exports[parameter])
        raise TemplateError(f"no cross-region export writer for {parameter}")

    def _dynamic(self, t: Template, text: str) -> str:
        """`{{resolve:ssm:NAME}}` dynamic references, to the parameter's value in the assembly."""

        return re.sub(r"\{\{resolve:ssm:([^:}]+)(?::\d+)?\}\}", lambda m: self._ssm(t, m.group(1)), text)


# ---- the local stand-in of each referenced resource type ------------------------------------------
@dataclass
class StandIns:
    """What each cloud resource is locally. URLs are those of the running `chatstack up`."""

    queue_url: str = "http://127.0.0.1:0/sqs/queue"
    pool_id: str = ""  # "<region>_LocalPool" once the region is known
    client_id: str = "localappclient0000000000"
    function_names: dict[str, str] = field(default_factory=dict)  # logical id -> wiring name

    def __call__(self, t: Template, logical: str, attribute: str | None) -> str:
        resource = t.resources[logical]
        kind = resource.get("Type", "")
        props = resource.get("Properties", {})
        key = (kind, attribute)
        simple = {
            ("AWS::SQS::Queue", None): self.queue_url,
            ("AWS::SQS::Queue", "QueueUrl"): self.queue_url,
            ("AWS::Cognito::UserPool", None): self.pool_id,
            ("AWS::Cognito::UserPool", "ProviderURL"): f"cognito-idp.{t.region}.{URL_SUFFIX}/{self.pool_id}",
            ("AWS::Cognito::UserPoolClient", None): self.client_id,
            ("AWS::ApiGatewayV2::Api", None): WS_API if props.get("ProtocolType") == "WEBSOCKET" else "http",
            ("AWS::RDS::DBProxy", "Endpoint"): DB,
            ("AWS::RDS::DBProxyEndpoint", "Endpoint"): DB,
            ("AWS::RDS::DBCluster", "Endpoint.Address"): DB,
            ("AWS::RDS::DBCluster", "ReadEndpoint.Address"): DB,
            ("AWS::SecretsManager::Secret", None): SECRET,
            ("AWS::SecretsManager::SecretTargetAttachment", None): SECRET,
            ("AWS::ElastiCache::ReplicationGroup", "PrimaryEndPoint.Address"): CACHE,
            ("AWS::ElastiCache::ReplicationGroup", "ReaderEndPoint.Address"): CACHE,
            ("AWS::OpenSearchServerless::Collection", "CollectionEndpoint"): COLLECTION,
        }
        if key in simple:
            return simple[key]
        if kind == "AWS::SQS::Queue" and attribute in ("Arn", "QueueName"):
            return str(props.get("QueueName", logical))
        if kind == "AWS::SageMaker::Endpoint":
            return str(props.get("EndpointName", logical))
        if kind == "AWS::SageMaker::InferenceComponent":
            return str(props.get("InferenceComponentName", logical))
        if kind == "AWS::Lambda::Function" and attribute in (None, "Arn"):
            return self.function_names.get(logical, logical)
        raise TemplateError(
            f"{t.stack}: {logical} ({kind}{'.' + attribute if attribute else ''}) has no local stand-in"
        )


# ---- the deployment's shape ----------------------------------------------------------------------
def _function_uri_target(value: Any) -> str:
    """The logical id of the function an integration or authorizer URI names."""
    text = json.dumps(value)
    match = re.search(r'"Fn::GetAtt": \["([^"]+)", "Arn"\]', text)
    if not match:
        raise TemplateError(f"cannot tell which function {text[:200]} invokes")
    return match.group(1)


def _functions(t: Template) -> tuple[dict[str, DeployedFunction], dict[str, str]]:
    by_handler = {f.handler: f for f in wiring.FUNCTIONS}
    found: dict[str, DeployedFunction] = {}
    names: dict[str, str] = {}
    for logical, resource in t.of_type("AWS::Lambda::Function").items():
        props = resource.get("Properties", {})
        module, _, attribute = str(props.get("Handler", "")).rpartition(".")
        spec = by_handler.get(f"{module}:{attribute}")
        if spec is None:
            continue  # CDK's own providers (custom resources), not service code
        # Lambda's defaults when a template leaves them out: 128 MB, 3 s.
        memory, timeout = int(props.get("MemorySize", 128)), int(props.get("Timeout", 3))
        spec = replace(spec, memory_mb=memory, timeout_s=timeout)
        env = dict(props.get("Environment", {}).get("Variables", {}))
        found[spec.name] = DeployedFunction(spec, logical, env)
        names[logical] = spec.name
    return found, names


def _authorizer(t: Template, resolver: Resolver, names: dict[str, str], logical: str) -> Authorizer:
    props = t.resources[logical]["Properties"]
    sources = tuple(props.get("IdentitySource") or ())
    if props.get("AuthorizerType") == "JWT":
        jwt_config = props.get("JwtConfiguration", {})
        return Authorizer(
            kind="JWT",
            identity_sources=sources,
            issuer=resolver.resolve(t, jwt_config.get("Issuer", "")),
            audiences=tuple(resolver.resolve(t, a) for a in jwt_config.get("Audience", [])),
        )
    target = _function_uri_target(props.get("AuthorizerUri"))
    if target not in names:
        raise TemplateError(f"{t.stack}: authorizer {logical} invokes {target}, which is no service function")
    return Authorizer(
        kind="REQUEST",
        identity_sources=sources,
        function=names[target],
        payload_version=str(props.get("AuthorizerPayloadFormatVersion", "1.0")),
        simple_responses=bool(props.get("EnableSimpleResponses", False)),
        cache_ttl_s=int(props.get("AuthorizerResultTtlInSeconds", 0) or 0),
    )


def _apis(t: Template, resolver: Resolver, names: dict[str, str]) -> tuple[Any, ...]:
    integrations = {
        logical: _function_uri_target(r["Properties"].get("IntegrationUri"))
        for logical, r in t.of_type("AWS::ApiGatewayV2::Integration").items()
    }
    apis = t.of_type("AWS::ApiGatewayV2::Api")
    protocols = {k: r["Properties"].get("ProtocolType") for k, r in apis.items()}
    ws_routes: dict[str, str] = {}
    ws_authorizer: Authorizer | None = None
    http_routes: list[HttpRoute] = []
    for route in t.of_type("AWS::ApiGatewayV2::Route").values():
        props = route["Properties"]
        api = str(props["ApiId"].get("Ref")) if isinstance(props.get("ApiId"), dict) else ""
        match = re.search(r'"Ref": "([^"]+)"', json.dumps(props.get("Target", "")))
        if not match or integrations.get(match.group(1)) not in names:
            raise TemplateError(f"{t.stack}: route {props.get('RouteKey')} has no service function behind it")
        function = names[integrations[match.group(1)]]
        authorizer = None
        if props.get("AuthorizationType", "NONE") != "NONE":
            authorizer = _authorizer(t, resolver, names, props["AuthorizerId"]["Ref"])
        if protocols.get(api) == "WEBSOCKET":
            ws_routes[props["RouteKey"]] = function
            if props["RouteKey"] == "$connect":
                ws_authorizer = authorizer
        else:
            method, _, path = str(props["RouteKey"]).partition(" ")
            http_routes.append(HttpRoute(method, path, function, authorizer))
    return ws_routes, ws_authorizer, http_routes


def _user_pool(templates: dict[str, Template], region: str, stand_ins: StandIns) -> UserPool | None:
    for t in templates.values():
        if t.region != region:
            continue
        for pool in t.of_type("AWS::Cognito::UserPool").values():
            props = pool.get("Properties", {})
            custom = tuple(f"custom:{a['Name']}" for a in props.get("Schema", []) if "Name" in a)
            trigger = props.get("LambdaConfig", {}).get("PreTokenGenerationConfig") or {}
            arn = trigger.get("LambdaArn") or props.get("LambdaConfig", {}).get("PreTokenGeneration")
            spec: wiring.Function | None = None
            if arn:
                logical = _function_uri_target(arn)
                in_stack, names = _functions(t)
                spec = in_stack[names[logical]].spec if logical in names else None
                if spec is None:
                    raise TemplateError(f"{t.stack}: the pre-token trigger {logical} is no service function")
            version = str(trigger.get("LambdaVersion", "V1_0" if arn else ""))
            name = spec.name if spec else ""
            policy = dict((props.get("Policies") or {}).get("PasswordPolicy") or {})
            return UserPool(stand_ins.pool_id, stand_ins.client_id, custom, name, version, spec, policy)
    return None


def load_deployment(
    cdk_out: Path, stand_ins: StandIns | None = None, region: str | None = None
) -> Deployment:
    templates = load_templates(cdk_out)
    region = region or primary_region(templates)
    apis = [t for t in templates.values() if t.region == region and t.of_type("AWS::ApiGatewayV2::Api")]
    if len(apis) != 1:
        raise TemplateError(f"expected one stack with the APIs in {region}, found {len(apis)}")
    api = apis[0]
    stand_ins = stand_ins or StandIns()
    stand_ins.pool_id = stand_ins.pool_id or f"{region}_LocalPool"
    functions, names = _functions(api)
    stand_ins.function_names.update(names)
    resolver = Resolver(templates, stand_ins)
    ws_routes, ws_authorizer, http_routes = _apis(api, resolver, names)
    return Deployment(
        region=region,
        functions=functions,
        ws_routes=ws_routes,
        ws_authorizer=ws_authorizer,
        http_routes=http_routes,
        user_pool=_user_pool(templates, region, stand_ins),
        templates=templates,
    )


# ---- each function's environment, mapped to the local stand-ins -----------------------------------
@dataclass(frozen=True, slots=True)
class LocalUrls:
    base: str  # the running `chatstack up`: gateway, @connections, SQS, Cognito stand-in
    database_url: str
    redis_url: str
    model_url: str  # the local model server, which also answers the SageMaker runtime API
    queue_url: str
    sqs_endpoint_url: str
    connections_url: str = ""  # where @connections is served (the runtime's internal listener); "": base


@dataclass(frozen=True, slots=True)
class Mapping:
    variable: str
    deployed: str
    local: str | None  # None: not set locally
    why: str


def function_environment(
    deployment: Deployment, name: str, urls: LocalUrls
) -> tuple[dict[str, str], list[Mapping]]:
    """The function's variables as the template sets them, with each cloud resource swapped for its
    stand-in; the list says what differs from the cloud and why."""
    function = deployment.functions[name]
    api = next(t for t in deployment.templates.values() if function.logical_id in t.resources)
    stand_ins = StandIns(queue_url=urls.queue_url)
    if deployment.user_pool is not None:
        stand_ins.pool_id, stand_ins.client_id = deployment.user_pool.pool_id, deployment.user_pool.client_id
    stand_ins.function_names.update({f.logical_id: n for n, f in deployment.functions.items()})
    resolver = Resolver(deployment.templates, stand_ins)
    env: dict[str, str] = {}
    notes: list[Mapping] = []

    def local(variable: str, deployed: str, value: str | None, why: str) -> None:
        notes.append(Mapping(variable, deployed, value, why))
        if value is not None:
            env[variable] = value

    cognito = f"https://cognito-idp.{deployment.region}.{URL_SUFFIX}/"
    for variable, raw in function.environment.items():
        value = resolver.resolve(api, raw)
        if DB in value:
            # The cloud names a host and a secret; locally one URL carries both.
            local(f"{variable} -> CHATSTACK_DATABASE_URL", value, None, "RDS Proxy -> embedded PostgreSQL")
            env["CHATSTACK_DATABASE_URL"] = urls.database_url
        elif CACHE in value:
            local(variable, value, urls.redis_url, "ElastiCache (Valkey) -> embedded Redis")
        elif SECRET in value or variable.endswith(("_SECRET_ARN", "_SECRET_ID")):
            local(variable, value, None, "Secrets Manager has no stand-in: local URLs carry the credentials")
        elif COLLECTION in value:
            local(variable, value, None, "OpenSearch Serverless -> pgvector in the same PostgreSQL")
        elif variable == "CHATSTACK_VECTOR_STORE" and value == "opensearch":
            local(variable, value, "pgvector", "OpenSearch Serverless -> pgvector in the same PostgreSQL")
        elif variable == "CHATSTACK_EMBEDDINGS" and value == "sagemaker":
            local(variable, value, "local", "the embedding endpoint -> the packaged local embedding model")
        elif WS_API in value:
            connections = urls.connections_url or urls.base
            local(variable, value, connections, "API Gateway @connections -> the gateway emulator")
        elif variable.endswith("JWKS_URL") and value.startswith(cognito):
            jwks = urls.base + "/cognito-idp/" + value[len(cognito) :]
            local(variable, value, jwks, "Cognito's JWKS -> the Cognito stand-in's")
        else:
            env[variable] = value
    if env.get("CHATSTACK_MODEL_TRANSPORT") == "sagemaker":
        # The local server speaks the LMI /invocations contract; over HTTP, because the health check
        # asks SageMaker's control plane (DescribeEndpoint), which has no stand-in.
        why = "SageMaker endpoint -> the local LMI-compatible model server"
        invocations = urls.model_url.rstrip("/") + "/invocations"
        local("CHATSTACK_MODEL_TRANSPORT", "sagemaker", "http", why)
        for variable in ("CHATSTACK_MODEL_ENDPOINT", "CHATSTACK_MODEL_FALLBACK_ENDPOINT"):
            if env.get(variable):
                local(variable, env[variable], invocations, why)
    local("CHATSTACK_SQS_ENDPOINT_URL", "", urls.sqs_endpoint_url, "SQS -> the local queue")
    return env, notes


def shared_environment(deployment: Deployment, urls: LocalUrls) -> tuple[dict[str, str], list[Mapping]]:
    """One environment for every function, as the local Lambda hosts run them all in each process.
    Functions whose templates set a variable differently cannot share a host: that is an error here,
    not a silent choice of one of the values."""
    merged: dict[str, str] = {}
    owners: dict[str, str] = {}
    notes: dict[str, Mapping] = {}
    for name in sorted(deployment.functions):
        env, mapped = function_environment(deployment, name, urls)
        for variable, value in env.items():
            if variable in merged and merged[variable] != value:
                raise TemplateError(
                    f"{variable} is {merged[variable]!r} for {owners[variable]} but {value!r} for {name}; "
                    "the local Lambda hosts need one value"
                )
            merged[variable], owners[variable] = value, name
        notes.update({m.variable: m for m in mapped})
    return merged, list(notes.values())
