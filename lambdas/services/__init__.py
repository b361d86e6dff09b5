"""Services: one per use case, called by the thin handlers; they hold the flow, adapters do the I/O."""
