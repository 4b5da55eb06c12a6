"""IKE (Zheng et al. 2023, EasyEdit's `IKE`): no weight changes; the edited model is asked
with the k demonstrations nearest to the edit, then "New Fact: {prompt} {target}\\nPrompt: "
before the question (EasyEdit's `icl_lm_eval`: `''.join(icl_examples) + f"New Fact: ...
\\nPrompt: {x}"`). The text goes on the edit's handle (`prompt_prefix`), and the evaluation
puts it before every question asked of the edited model, the locality questions included.

One fact per prompt, as published: IKE edits one case per update (batches=False) and keeps no
edit across a sequence (sequences=False: a sequence's facts would all have to share one
prompt, which is not the published method). Demonstrations come from `demonstrations`, a file
of edit cases that must share no case with the evaluated suite (checked when the run starts).
Retrieval is BM25, a variant of the published MiniLM retrieval (demonstrations.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...cases.case import Case, WildInputError
from ...model.load import TINYWORLD_DIR
from ..api import EditHandle, Editor, EditorCache, EditorState, cached
from . import demonstrations as demos

# The tinyworld model's window is 128 positions and one demonstration takes about 50 of its
# tokens (its tokenizer spells "New Fact" letter by letter), the new fact and the question 50
# more: one demonstration is what fits, where the published files take 16.
TINYWORLD = {"k": 1, "demonstrations": str(TINYWORLD_DIR / "mend.jsonl")}
IGNORED = {"sentence_model_name": "the published retriever's embedding model (all-MiniLM-L6-v2 from the hub); "
                                  "here demonstrations are retrieved with BM25 (`retriever`), a variant"}


@dataclass
class IKEHparams:
    """EasyEdit's IKE keys (`k`, `use_icl_examples`) and ours: `demonstrations`, the file of
    training edits (EasyEdit's `train_ds`), and `retriever`, which says how they are found."""

    k: int = 16
    demonstrations: str = ""
    use_icl_examples: bool = True
    retriever: Literal["bm25"] = "bm25"


def defaults(config, profile: str) -> dict:
    """The published k (every EasyEdit IKE file: 16) for every architecture; tinyworld: one
    demonstration from its bundled MEND training edits, which no bundled suite evaluates."""
    return dict(TINYWORLD) if profile == "tinyworld" else {"k": 16}


def _wanted(hp: IKEHparams) -> int:
    return hp.k if hp.use_icl_examples else 0


def check_cases(hp: IKEHparams, cases: list[Case]) -> None:
    """The demonstrations are readable and share no case with the evaluated suite; the
    retriever's package (an optional extra) is installed."""
    import importlib.util

    if _wanted(hp) == 0:
        return
    if importlib.util.find_spec("bm25s") is None:
        raise WildInputError("--editor ike: retrieving demonstrations needs the bm25s package "
                             "(pip install 'pytest-wild[ike]')")
    if not hp.demonstrations:
        raise WildInputError("ike: no demonstrations: set `demonstrations: FILE` (edit cases the suite does not "
                             "evaluate, e.g. CounterFact's) with --wild-hparams, or `k: 0` for the new fact alone")
    demos.check_disjoint(demos.read_cases(hp.demonstrations), hp.demonstrations, cases)


def apply(model, tokenizer, cases: list[Case], hp: IKEHparams, *, handle: EditHandle, cache: EditorCache,
          state: EditorState) -> None:
    """Put the nearest demonstrations and the new fact on the handle; no weight is touched."""
    (case,) = cases
    chosen = []
    if _wanted(hp):
        retriever = cached(cache, ("ike pool", hp.demonstrations, hp.retriever),
                           lambda: demos.Retriever.over(demos.pool_texts(demos.read_cases(hp.demonstrations))))
        chosen = retriever.nearest(demos.query(case), _wanted(hp))
    handle.prompt_prefix = "".join(chosen) + demos.lead(case)
    handle.info.append({"demonstrations": chosen})


IKE = Editor("ike", "IKE: the new fact and k demonstrations in the prompt, no weight changed (Zheng et al. 2023; "
             "demonstrations retrieved by BM25, a variant)",
             IKEHparams, defaults, apply, ignored=IGNORED, batches=False, sequences=False, check_cases=check_cases)
