"""The subcommands of the chatstack CLI, one module each."""
