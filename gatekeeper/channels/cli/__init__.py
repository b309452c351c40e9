"""The `gatekeeper` command."""
