"""CLI command groups, one module each, registered in :data:`orchestrator.cli.COMMANDS`."""
