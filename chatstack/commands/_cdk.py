"""Reading the deployment config exactly as `cdk synth` does, from commands that run outside CDK.

`cdk/` is not part of the installed wheel; in a source checkout it sits next to the `chatstack`
package, so commands that need it put the checkout root on `sys.path` once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cdk.config import DeploymentConfig


class CdkUnavailable(Exception):
    """`cdk/config.py` cannot be imported (an installed wheel, not a checkout); one sentence."""


def ensure_cdk_config(command: str) -> None:
    """Make `import cdk.config` work, or raise CdkUnavailable naming the command that needs it."""
    try:
        import cdk.config  # noqa: F401
    except ImportError:
        root = Path(__file__).resolve().parents[2]
        if not (root / "cdk" / "config.py").is_file():
            raise CdkUnavailable(
                f"chatstack {command} needs a source checkout (it reads cdk/config.py)."
            ) from None
        sys.path.insert(0, str(root))


def load_deployment_config(config_file: str | None, command: str) -> DeploymentConfig:
    """The validated deployment config (`cdk.config.load_config`); raises cdk.config.ConfigError."""
    ensure_cdk_config(command)
    from cdk.config import DEFAULT_CONFIG_FILE, load_config

    return load_config({"config": config_file or DEFAULT_CONFIG_FILE}, Path.cwd())
