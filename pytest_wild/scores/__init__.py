"""Stage 5, the scores: one edit evaluated end to end (answer before, edit, answer after, restore), each answer
scored, under the names of the metrics a run reports."""
