"""Meta-learned editors (MEND): a network, trained per model, that turns the gradient of an
edit's loss into a weight update. In the order of an edit: `gradients.py` takes the gradient
apart into per-token inputs and output gradients, `network.py` transforms them, `mend.py` is
the editor. In the order of a training: `training_data.py` (cases, split, disjointness),
`training.py` (one step's losses), `trainer.py` (the loop), `checkpoint.py` (its state),
`stored.py` (the trained network on disk), `settings.py` (the published settings).

`ultraedit.py` (UltraEdit) needs no training: it turns the same per-token pieces into an update
with running statistics and a ridge solve."""
