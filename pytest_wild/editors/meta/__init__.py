"""Meta-learned editors (MEND): a network, trained per model, that turns the gradient of an
edit's loss into a weight update. `gradients.py` takes the gradient apart into per-token
inputs and output gradients; `network.py` is the editor network that transforms them."""
