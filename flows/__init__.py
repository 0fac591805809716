"""civicbot flows package."""
