"""Lambda code: thin handlers, the chat core, and adapters for Redis, PostgreSQL, OpenSearch, SageMaker, API Gateway and SQS."""
