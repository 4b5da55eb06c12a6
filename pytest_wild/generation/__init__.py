"""Stage 4, the answers: the generation engine (batched greedy decoding with a KV cache) under WILD's stop
rules, and the paper's own loop kept as its yardstick."""
