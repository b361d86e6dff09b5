"""The chat core: prompt building, token budgets, delta batching. No I/O."""
