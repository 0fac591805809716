"""Admin tools: CLI commands now, the admin web later. Calls repositories and services, never
channel libraries."""
