"""`chatstack up` writes its own lines (`chatstack.up`: a child restarted, a limit hit) as text on
stderr. Powertools' Logger, made in lambdas.observability for the Lambda handlers, takes over the whole
`chatstack` logger tree of the process that imports it (its own handler on stdout, JSON, no
propagation): a module the local runtime imports must not bring it in. An import in the REST app once
did, and the supervisor's restart lines went to stdout as JSON (tests/e2e/test_supervisor.py)."""

from __future__ import annotations

import subprocess
import sys


def test_what_chatstack_up_imports_leaves_the_chatstack_logger_alone() -> None:
    probe = (
        "import logging, sys\n"
        "import chatstack.local.runtime, chatstack.local.gateway, lambdas.api.app, lambdas.adapters.db\n"
        "tree = logging.getLogger('chatstack')\n"
        "loaded = 'observability' if 'lambdas.observability' in sys.modules else 'clean'\n"
        "print(loaded, tree.handlers, tree.propagate)\n"
    )
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "clean [] True"
