"""Lambda code: thin handlers, the chat core, and the adapters (Redis, PostgreSQL, OpenSearch,
SageMaker, API Gateway, SQS)."""
