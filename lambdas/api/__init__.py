"""The REST API: one FastAPI app, uvicorn locally and Mangum in Lambda."""
