"""Stage 6, the results: the rows the controller gathers, aggregates and the JSON report, goldens, gates,
merged shards, comparison tables, and where each is written."""
