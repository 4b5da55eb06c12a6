"""Stage 1, the cases: a suite found and read (YAML, QAEdit, CounterFact, hub), its cases checked, how each
question is put, and which ones fit the model's window. Nothing here imports torch."""
