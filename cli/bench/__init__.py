"""`llamaq bench NAME`: each prints a table, writes bench-results/NAME.json, and
measures its baseline in the same run."""
