"""Operator commands, run as `python manage.py <command>`: one small module per command, each
exposing a `COMMAND`; manage.py lists them. They use core, infrastructure and services, never
livekit.agents (the token command uses livekit-api only)."""
