"""The chatstack CLI, the local runtime, the client SDK, benchmarks and the capacity planner."""
