"""The admin commands of the ``civicbot`` CLI, one module per domain. Each module's
``build(runtime)`` returns its Typer sub-app; ``bot/cli.py`` (the root app, in the
composition layer) passes a :class:`admin.cli.runtime.Runtime` in, so nothing here imports
``bot``."""
