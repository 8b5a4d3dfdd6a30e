"""What the model being trained says about each pair of a batch: CLIPScore, the per-sample
InfoNCE losses and their closed-form gradient. Pure tensor functions, shared by the strategies
and the scoring pass."""

import torch
import torch.nn.functional as F


def clipscore(image_features: torch.Tensor, text_features: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """``scale * max(cos(image_i, text_i), 0)`` per pair."""
    cos = (F.normalize(image_features.float(), dim=-1) * F.normalize(text_features.float(), dim=-1)).sum(-1)
    return scale * cos.clamp_min(0)


def infonce_directions(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """[B, 2]: each pair's image->text cross-entropy (its row of the batch's logits) and
    text->image cross-entropy (its column)."""
    logits = (
        logit_scale.float() * F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T
    )
    labels = torch.arange(len(logits), device=logits.device)
    rows = F.cross_entropy(logits, labels, reduction="none")
    cols = F.cross_entropy(logits.T, labels, reduction="none")
    return torch.stack([rows, cols], dim=1)


def per_sample_infonce(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE of each pair within the batch: the mean of its two directions."""
    return infonce_directions(image_features, text_features, logit_scale).mean(1)


def contrastive_gradient(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """[B, 2d]: the gradient of each pair's symmetric InfoNCE ``l_i`` with respect to its own
    normalised embeddings ``(u_i, v_i)``, in closed form (no autograd).

    With ``s`` the logit scale, ``P`` the row softmax and ``Q`` the column softmax of
    ``s U V^T``: ``dl_i/du_i = s/2 (sum_j P_ij v_j - v_i + (Q_ii - 1) v_i)`` and
    ``dl_i/dv_i = s/2 (sum_j Q_ji u_j - u_i + (P_ii - 1) u_i)``. This is the contrastive
    counterpart of DivBS's last-layer gradient (the gradient at the model's output layer).
    O(B^2 d).
    """
    u = F.normalize(image_features.float(), dim=-1)
    v = F.normalize(text_features.float(), dim=-1)
    s = logit_scale.float()
    logits = s * u @ v.T
    p = logits.softmax(dim=1)
    q = logits.softmax(dim=0)
    grad_u = p @ v - v + (q.diagonal() - 1)[:, None] * v
    grad_v = q.T @ u - u + (p.diagonal() - 1)[:, None] * u
    return torch.cat([grad_u, grad_v], dim=1) * (s / 2)
