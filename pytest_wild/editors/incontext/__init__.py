"""In-context editors: the edit is text put before the question (the handle's `prompt_prefix`),
no weight changes. `demonstrations.py` (the pool and its retrieval), `ike.py` (IKE)."""
