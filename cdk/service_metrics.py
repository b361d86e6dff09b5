"""The custom metrics the Lambdas publish (Powertools EMF, see lambdas/observability.py).

Dashboards and alarms read exactly these; Powertools adds the `service` dimension to each.
"""

from __future__ import annotations

NAMESPACE = "Chatstack"
DIMENSIONS = {"service": "chatstack"}

TIME_TO_FIRST_TOKEN = "TimeToFirstToken"
INPUT_TOKENS = "InputTokens"
OUTPUT_TOKENS = "OutputTokens"
GENERATION_ERRORS = "GenerationErrors"
CONNECTIONS = "Connections"
JOBS_FAILED = "JobsFailed"
