"""The LLM judge (issue 18, in progress; not yet a `--wild-metric`): a grader prompt with a
strict CORRECT / INCORRECT contract (`grader.py`), a cache of verdicts on disk (`cache.py`),
and a client for any OpenAI-compatible chat-completions server (`client.py`). An answer the
judge cannot grade is `unjudged`, never counted as right or wrong."""
