"""Math of SparseGPT: Hessian accumulation and the column-by-column prune-and-update sweep."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["HessianStats", "sparsegpt_prune"]


class HessianStats:
    """Running ``H = 2/n · Σ xᵀx`` over the calibration tokens seen by one Linear layer."""

    def __init__(self, in_features: int) -> None:
        self.H = torch.zeros(in_features, in_features, dtype=torch.float32)
        self.tokens = 0

    def add(self, module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> None:
        x = inputs.reshape(-1, inputs.shape[-1]).float()  # [tokens, in]
        n = x.shape[0]
        self.H *= self.tokens / (self.tokens + n)
        self.tokens += n
        x = x * (2.0 / self.tokens) ** 0.5
        self.H += x.T @ x


def _inverse_hessian_cholesky(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + λI)⁻¹``; doubles λ until the factorisation succeeds."""
    damp = percdamp * torch.mean(torch.diag(H))
    eye = torch.eye(H.shape[0], dtype=H.dtype)
    for _ in range(8):
        L, info = torch.linalg.cholesky_ex(H + damp * eye)
        if int(info) == 0:
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
        damp = damp * 2 if damp > 0 else torch.tensor(1e-6)
    raise torch.linalg.LinAlgError("Hessian is not positive definite even after damping")


def _block_count(rows: int, i1: int, i2: int, sparsity: float) -> int:
    """Entries pruned in columns ``[i1, i2)``: cumulative rounding, so the blocks add up to exactly
    ``round(sparsity * rows * cols)`` for the layer (``round(sparsity * block)`` when that is whole)."""
    return int(round(sparsity * rows * i2)) - int(round(sparsity * rows * i1))


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    H: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> torch.Tensor:
    """The pruned and reconstructed ``[out, in]`` weight (returned, input untouched).

    For each column block, the mask drops the entries with the smallest OBS saliency
    ``w² / [H⁻¹]_jj²`` (exactly ``sparsity`` of the block, or ``M-N`` of every M columns per row),
    then each column's pruning error is propagated to the not-yet-processed columns.
    """
    W = weight.detach().clone().float()  # [out, in]
    H = H.clone()
    dead = torch.diag(H) == 0  # inputs that were always zero: their weights do not matter
    H[dead, dead] = 1
    W[:, dead] = 0
    Hinv = _inverse_hessian_cholesky(H, percdamp)  # [in, in] upper
    cols = W.shape[1]
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d = torch.diag(Hinv1)  # [count]
        prune = torch.zeros_like(W1, dtype=torch.bool)
        if nm is None:
            saliency = W1.pow(2) / d.reshape(1, -1).pow(2)
            k = _block_count(W.shape[0], i1, i2, sparsity)
            if k:
                prune.view(-1)[torch.topk(saliency.reshape(-1), k, largest=False).indices] = True
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                n, m = nm
                sal = W1[:, i:i + m].pow(2) / d[i:i + m].reshape(1, -1).pow(2)
                prune.scatter_(1, i + torch.topk(sal, m - n, dim=1, largest=False).indices, True)
            w = W1[:, i]
            q = w.masked_fill(prune[:, i], 0.0)
            Q1[:, i] = q
            err = (w - q) / d[i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W.to(weight.dtype)
