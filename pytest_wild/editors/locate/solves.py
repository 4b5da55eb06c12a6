"""Step 3 of the locate-then-edit methods: the weight update from keys and values, solved
against the second moment C of the keys the edit must preserve (pytest_wild.model.stats).

Everything is float64. C's Cholesky factor and AlphaEdit's projections are kept in the
model's `EditorCache` (d_k² × 8 bytes each, on the model's device), so they are computed once
per statistic and evicted when the cache's bound needs the room (`cache=None`: computed for
the call and not kept).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..api import EditorCache, cached


def moments(model, tokenizer, hp, layers: Sequence[int], cache: EditorCache | None = None) -> dict[int, object]:
    """The second moment C of the rewrite module's input at each layer (see pytest_wild.model.stats)."""
    from ...model import stats

    names = {layer: hp.rewrite_module_tmp.format(layer) for layer in layers}
    found = stats.second_moments(model, tokenizer, list(names.values()), hp.mom2_dataset, hp.mom2_n_samples,
                                 hp.mom2_dtype, memory=cache)
    return {layer: found[name] for layer, name in names.items()}


def moments_of_layers(model, tokenizer, hp, cache: EditorCache | None = None) -> None:
    """The second moments of every edited layer, computed (or read from disk) once before the
    first case: the editors' `prepare`."""
    moments(model, tokenizer, hp, sorted(set(hp.layers)), cache)


def cholesky(moment, device, cache: EditorCache | None = None) -> torch.Tensor:
    """The float64 Cholesky factor of C. A C that is not numerically positive definite (few
    samples, dead units) gets the smallest ridge ε·mean(diag C), ε = 1e-10, 1e-9, ..., that
    makes it so."""
    def factorise() -> torch.Tensor:
        matrix = moment.matrix.to(device=device, dtype=torch.float64)
        scale = matrix.diagonal().mean().clamp_min(1e-30)
        eye = torch.eye(matrix.shape[0], dtype=torch.float64, device=device)
        ridge = 0.0
        for exponent in range(-10, 1):
            factor, info = torch.linalg.cholesky_ex(matrix + ridge * scale * eye)
            if int(info) == 0:
                return factor
            ridge = 10.0 ** exponent
        raise RuntimeError("the second-moment matrix cannot be factorised")

    return cached(cache, ("cholesky", moment.key, str(device)), factorise)


def solve_c(moment, rhs: torch.Tensor, cache: EditorCache | None = None) -> torch.Tensor:
    """C⁻¹ rhs (float64) with C's Cholesky factor."""
    factor = cholesky(moment, rhs.device, cache)
    squeeze = rhs.ndim == 1
    out = torch.cholesky_solve(rhs.double().reshape(rhs.shape[0], -1), factor)
    return out.squeeze(1) if squeeze else out


def rank_one_update(u: torch.Tensor, key: torch.Tensor, current: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ROME: ΔW = r uᵀ with r = (v* − W k − b) / (kᵀu), which maps `key` to `target`."""
    return torch.outer((target - current) / key.dot(u), u)


def memit_solve(moment, keys: torch.Tensor, resid: torch.Tensor, weight: float,
                cache: EditorCache | None = None) -> torch.Tensor:
    """MEMIT: ΔW = R Kᵀ (λC + K Kᵀ)⁻¹ for keys K (d_k × n) and residuals R (d_v × n).

    With A = C⁻¹K (C's Cholesky factor) the Woodbury identity gives
    (λC + KKᵀ)⁻¹K = A (λI + KᵀA)⁻¹, so each edit costs an n × n solve, not a d_k × d_k one."""
    keys, resid = keys.double(), resid.double()
    if weight <= 0:  # no preservation term: the minimum-norm solution
        return resid @ torch.linalg.pinv(keys)
    a = solve_c(moment, keys, cache)
    gram = keys.T @ a
    eye = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
    return resid @ torch.linalg.solve(weight * eye + gram, a.T)


def memit_solve_dense(matrix: torch.Tensor, keys: torch.Tensor, resid: torch.Tensor, weight: float) -> torch.Tensor:
    """The published form: adj = solve(λC + KKᵀ, K), ΔW = R adjᵀ (float64). For checks."""
    keys, resid = keys.double(), resid.double()
    adj = torch.linalg.solve(weight * matrix.double().to(keys.device) + keys @ keys.T, keys)
    return resid @ adj.T


def projection(moment, threshold: float, mode: str, device,
               cache: EditorCache | None = None) -> tuple[torch.Tensor, int]:
    """AlphaEdit: (P = Û Ûᵀ, number of directions kept), Û the eigenvectors of C below
    `threshold` (absolute), or (`mode="energy"`) the smallest ones holding at most that share
    of C's trace."""
    def project() -> tuple[torch.Tensor, int]:
        eigenvalues, vectors = torch.linalg.eigh(moment.matrix.to(device=device, dtype=torch.float64))
        if mode == "energy":
            share = eigenvalues.clamp_min(0).cumsum(0) / eigenvalues.clamp_min(0).sum().clamp_min(1e-30)
            keep = share <= threshold
        else:
            keep = eigenvalues < threshold
        basis = vectors[:, keep]
        # stored in the statistics' dtype (float32 for the published settings: d_k² × 4 bytes)
        return (basis @ basis.T).to(moment.matrix.dtype), int(keep.sum())

    return cached(cache, ("projection", moment.key, float(threshold), mode, str(device)), project)


def alphaedit_solve(proj: torch.Tensor, keys: torch.Tensor, resid: torch.Tensor, c_prev: torch.Tensor | None,
                    alpha: float) -> torch.Tensor:
    """AlphaEdit: ΔW (d_v × d_k) from ΔWᵀ = (P (K Kᵀ + C_prev) + α I)⁻¹ P K Rᵀ. With no previous
    edits (C_prev = 0) this equals P K (α I + Kᵀ P K)⁻¹ Rᵀ, an n × n solve."""
    proj, keys, resid = proj.double(), keys.double(), resid.double()
    projected = proj @ keys  # (d_k, n)
    if c_prev is None:
        eye = torch.eye(keys.shape[1], dtype=torch.float64, device=keys.device)
        return (projected @ torch.linalg.solve(alpha * eye + keys.T @ projected, resid.T)).T
    eye = torch.eye(keys.shape[0], dtype=torch.float64, device=keys.device)
    system = proj @ (keys @ keys.T + c_prev.to(keys.device, torch.float64)) + alpha * eye
    return torch.linalg.solve(system, projected @ resid.T).T
