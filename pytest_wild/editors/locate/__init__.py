"""Locate-then-edit editors: ROME, R-ROME, MEMIT, AlphaEdit. Each edit is three steps, one
module each, and each method reads as those steps (`rome.py`, `memit.py`, `alphaedit.py`):

1. keys (`keys.py`): the rewrite module's input at the fact token, averaged over the context
   templates (`templates.py`) the prompt is put behind;
2. values (`values.py`): the vector that, put at the fact token, makes the model say the
   target, found by gradient descent on δ (made cheaper by `fastpath.py` and `blocks.py`);
3. the update (`solves.py`): a rank-one or least-squares change of the rewrite module's
   weight, preserving the second moment C of its inputs; MEMIT and AlphaEdit spread it over
   several layers (`spread.py`).

Words used throughout:

- request: one edit, tokenised (`requests.py`); its prompts are the bare prompt and the
  prompt behind each context template;
- fact token (`lookup`): the position the key and value are read at, the subject's last
  token as published;
- key k: the rewrite module's input there; value v: its output (ROME) or the block's output
  (MEMIT) there; δ: the shift added to the value;
- rewrite module: the weight the update is written into (`rewrite_module_tmp`, an MLP's
  output projection by default), in the math layout ΔW (d_v × d_k) (pytest_wild.model.weights);
- C: the second moment E[k kᵀ] over a text corpus (pytest_wild.model.stats).
"""
