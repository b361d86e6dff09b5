"""Logger and Metrics, made once per process (Powertools). Metrics go out as CloudWatch EMF.

Traces: every function runs with Lambda's active tracing (cdk/constructs/chat_functions.py), so X-Ray
records each invocation and its cold start (the Initialization subsegment) with no SDK in the
function, and sendMessage hands its trace to the worker through SQS (`AWSTraceHeader`,
lambdas/adapters/queue.py). The functions do not load the X-Ray SDK (Powertools' Tracer): it cost
about 0.3 s of CPU at every cold start of a traced function (it builds two botocore clients for its
sampling rules), its spans covered little here (the hot path's HTTP exchanges do not go through
botocore), and AWS put it in maintenance mode on 25 February 2026, ending its support on 25 February
2027, pointing to OpenTelemetry instead:
https://docs.aws.amazon.com/xray/latest/devguide/xray-daemon-eos.html
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

SERVICE = "chatstack"
NAMESPACE = "Chatstack"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
