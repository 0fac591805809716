"""civicbot channels package."""
