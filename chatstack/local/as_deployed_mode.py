"""The glue between `chatstack up` and the synthesized templates (`--as-deployed DIR`).

The runtime asks this object, at four points, for what the templates say instead of the local
defaults: the functions' environment (before the Lambda hosts start, since they inherit it), the
functions with the templates' timeouts, the WebSocket route table and authorizer, and the REST app
behind the HTTP API's authorizer, plus the Cognito stand-in's routes. What it chose, and every place
where the local value differs from the cloud's, goes to `as-deployed.json` in the data directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chatstack.local.as_deployed import (
    Deployment,
    LocalUrls,
    Mapping,
    TemplateError,
    load_deployment,
    shared_environment,
)
from chatstack.local.cognito import CognitoUserPool, routes

# Local plumbing that stays although the templates do not set it: where the stand-ins are, and the
# run's credentials between the local processes (chatstack/local/internal_auth.py).
LOCAL_ONLY = (
    "CHATSTACK_SQS_ENDPOINT_URL",
    "CHATSTACK_SAGEMAKER_ENDPOINT_URL",
    "CHATSTACK_INTERNAL_",
    # How `up` runs its children (function timeouts for tests, liveness probes): not the cloud's.
    "CHATSTACK_FUNCTION_TIMEOUTS",
    "CHATSTACK_LIVENESS_",
)


class AsDeployedMode:
    def __init__(self, cdk_out: Path, data_dir: Path) -> None:
        self.cdk_out = cdk_out
        self.data_dir = data_dir
        try:
            self.deployment: Deployment = load_deployment(cdk_out)
        except TemplateError as exc:
            raise SystemExit(f"--as-deployed {cdk_out}: {exc}") from None
        self.pool: CognitoUserPool | None = None
        self.notes: list[Mapping] = []

    def apply_environment(self, urls: LocalUrls) -> dict[str, str]:
        """Replaces the local defaults in os.environ by the templates' variables (mapped). Settings the
        templates leave out take their defaults, as in the cloud, not the local runtime's choices."""
        try:
            env, self.notes = shared_environment(self.deployment, urls)
        except TemplateError as exc:
            raise SystemExit(f"--as-deployed {self.cdk_out}: {exc}") from None
        for key in [k for k in os.environ if k.startswith("CHATSTACK_")]:
            if key not in env and not key.startswith(LOCAL_ONLY):
                del os.environ[key]
        os.environ.update(env)
        os.environ["AWS_DEFAULT_REGION"] = self.deployment.region
        return env

    def functions(self, pool: Any) -> dict[str, Any]:
        """RemoteFunctions with the templates' memory and timeouts (the invoke's read timeout)."""
        from chatstack.local.lambda_host import RemoteFunction

        functions = {name: RemoteFunction(pool, f.spec) for name, f in self.deployment.functions.items()}
        trigger = self.deployment.user_pool.trigger_spec if self.deployment.user_pool else None
        if trigger is not None and trigger.name not in functions:  # in the identity stack, not the API's
            functions[trigger.name] = RemoteFunction(pool, trigger)
        return functions

    def websocket(self, functions: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """(route key -> function, $connect authorizer) as the WebSocket API is configured."""
        d = self.deployment
        table = {key: functions[name] for key, name in d.ws_routes.items()}
        name = d.ws_authorizer.function if d.ws_authorizer else ""
        authorizer = functions[name] if name else None
        return table, authorizer

    def user_pool(self, functions: dict[str, Any]) -> CognitoUserPool | None:
        spec = self.deployment.user_pool
        if spec is None:
            return None
        trigger = None
        if spec.trigger_function:
            function = functions[spec.trigger_function]
            version = {"V1_0": "1", "V2_0": "2", "V3_0": "3"}.get(spec.trigger_version, "1")

            def trigger(event: dict[str, Any]) -> Any:
                return function({**event, "version": version})

        self.pool = CognitoUserPool(
            self.data_dir / "identity",
            region=self.deployment.region,
            pool_id=spec.pool_id,
            client_id=spec.client_id,
            trigger=trigger,
            custom_attributes=spec.custom_attributes,
            password_policy=spec.password_policy,
        )
        return self.pool

    def rest(self, app: Any, functions: dict[str, Any]) -> Any:
        """The REST app behind the HTTP API's routes and authorizers as configured."""
        from jwt import PyJWK

        from chatstack.local.http_api_gate import HttpApiGate

        pool = self.pool or self.user_pool(functions)

        def keys(kid: str) -> Any:
            # A JWT authorizer fetches its issuer's keys; the only issuer here is the Cognito stand-in.
            if pool is None or kid != pool.kid:
                raise LookupError(f"no key {kid!r}")
            return PyJWK(pool.public_jwk).key

        return HttpApiGate(app, self.deployment, lambda name, event: functions[name](event), keys)

    def routes(self) -> list[Any]:
        return routes(self.pool) if self.pool is not None else []

    def write_report(self, base: str) -> Path:
        d = self.deployment
        report = {
            "cdk_out": str(self.cdk_out),
            "region": d.region,
            "functions": {
                name: {"memory_mb": f.spec.memory_mb, "timeout_s": f.spec.timeout_s}
                for name, f in d.functions.items()
            },
            "websocket_routes": d.ws_routes,
            "websocket_authorizer": asdict(d.ws_authorizer) if d.ws_authorizer else None,
            "http_routes": [asdict(r) for r in d.http_routes],
            "cognito": None
            if self.pool is None
            else {
                "endpoint": base + "/cognito-idp",
                "user_pool_id": self.pool.pool_id,
                "client_id": self.pool.client_id,
                "issuer": self.pool.issuer,
                "pre_token_trigger": d.user_pool.trigger_function if d.user_pool else "",
            },
            "differences": [asdict(n) for n in self.notes],
        }
        path = self.data_dir / "as-deployed.json"
        path.write_text(json.dumps(report, indent=2))
        return path
