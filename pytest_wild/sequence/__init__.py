"""Sequential editing: edits kept one after another and scored at checkpoints, the run directory a resumed
sequence starts from, one sequence per xdist worker, and the curve as a picture."""
