"""The LLM judge of `--wild-metric judge`: a grader prompt with a strict CORRECT / INCORRECT
contract (`grader`), a cache of verdicts on disk (`cache`), a client for any OpenAI-compatible
chat-completions server (`client`) or a local model (`local`), the options that choose one
(`settings`), and the grading of a run's answers at its end (`grading`). An answer the judge
cannot grade is `unjudged`, never counted as right or wrong."""
