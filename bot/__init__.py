"""civicbot bot package."""
