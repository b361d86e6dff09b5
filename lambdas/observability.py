"""Logger, Metrics and Tracer, made once per process (Powertools). Metrics go out as CloudWatch EMF."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "chatstack"
NAMESPACE = "Chatstack"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
