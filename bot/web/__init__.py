"""civicbot's web app: webhooks, the simulator, health."""
