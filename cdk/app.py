"""CDK entry point: `cdk synth` / `cdk deploy` (via cdk.json) or `make synth` (runs this file).

Synth is offline: the config is validated first (one sentence on failure, exit status 2), no AWS,
STS or git call is made, and every stack has an explicit account and region. cdk-nag's AwsSolutions
checks run on the whole app; an unsuppressed error fails synth (exit status 1).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts cdk/ first on sys.path, where cdk/constructs/ would shadow the
# `constructs` library that aws_cdk imports; the repository root goes there instead.
if sys.path and Path(sys.path[0]).resolve() == ROOT / "cdk":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cdk.config import ConfigError, DeploymentConfig, load_config  # noqa: E402

if TYPE_CHECKING:
    from aws_cdk import App, cx_api

    from cdk.stacks.deployment import Deployment


def file_context() -> dict[str, Any]:
    """cdk.json's context, so that running this file directly sees what `cdk synth` sees."""
    path = ROOT / "cdk.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return dict(data.get("context", {}))


def cli_context() -> dict[str, Any]:
    """Context passed by the cdk CLI (cdk.json plus -c values), if this process was started by it."""
    raw = os.environ.get("CDK_CONTEXT_JSON")
    return dict(json.loads(raw)) if raw else {}


def _flag(value: Any) -> bool:
    return str(value).strip().lower() not in {"false", "0", "no", "off", ""}


def build_app(
    config: DeploymentConfig,
    *,
    context: Mapping[str, Any],
    outdir: str | None = None,
    nag: bool = True,
) -> tuple[App, Deployment]:
    """The app for one config. `context["bundling"]` false makes the code asset just the source."""
    from aws_cdk import App, Validations
    from cdk_nag import AwsSolutionsChecks

    from cdk.bundling import BundleSpec, excluded_for, lambda_code
    from cdk.stacks.deployment import add_deployment

    app = App(context=dict(context), outdir=outdir)
    wheelhouse = context.get("wheelhouse")
    spec = BundleSpec(
        root=ROOT,
        install_dependencies=_flag(context.get("bundling", True)),
        cache_dir=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "chatstack"
        / "lambda-deps",
        wheelhouse=Path(str(wheelhouse)).resolve() if wheelhouse else None,
    )
    opensearch = config.vector_store == "opensearch"
    deployment = add_deployment(
        app, config, lambda function: lambda_code(spec.without(excluded_for(function, opensearch=opensearch)))
    )
    if nag:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return app, deployment


def nag_errors(assembly: cx_api.CloudAssembly) -> list[str]:
    """Every error annotation (cdk-nag's unsuppressed errors included) in the synthesized assembly."""
    found = []
    for stack in assembly.stacks:
        for message in stack.messages:
            if message.level.value == "error":
                found.append(f"{stack.stack_name} {message.id}: {str(message.entry.data).splitlines()[0]}")
    return found


def quiet_node_warnings() -> None:
    """jsii prints a banner on old Node releases; the synth output should show only what matters."""
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")


def main() -> int:
    quiet_node_warnings()
    context = {**file_context(), **cli_context()}
    if os.environ.get("CHATSTACK_CDK_CONFIG"):
        context["config"] = os.environ["CHATSTACK_CDK_CONFIG"]
    if _flag(os.environ.get("CHATSTACK_SKIP_BUNDLING", "0")):
        context["bundling"] = False
    try:
        config = load_config(context, ROOT)
    except ConfigError as error:
        print(f"Invalid deployment config: {error}", file=sys.stderr)
        return 2
    from cdk.bundling import BundlingError

    try:
        outdir = os.environ.get("CDK_OUTDIR", str(ROOT / "cdk.out"))
        app, _ = build_app(config, context=context, outdir=outdir)
        assembly = app.synth()
    except BundlingError as error:
        print(str(error), file=sys.stderr)
        return 1
    errors = nag_errors(assembly)
    for line in errors:
        print(line, file=sys.stderr)
    if errors:
        print(f"{len(errors)} unsuppressed error(s); see the lines above.", file=sys.stderr)
        return 1
    print(
        f"Synthesized {len(assembly.stacks)} stacks for {', '.join(config.regions)} into {assembly.directory}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
