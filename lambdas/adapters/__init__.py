"""Adapters: the only modules that talk to Redis, PostgreSQL, boto3 services and HTTP."""
