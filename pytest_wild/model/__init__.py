"""Stage 2, the model: loaded (bundled, named, local, hub) from checked safetensors directories, placed on a
device, and read from inside (module names per architecture, weights, forward hooks, second moments)."""
