"""civicbot storage package."""
