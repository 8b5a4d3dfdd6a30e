"""DivBS: a batch that covers the directions of the candidates' gradients."""

import torch

from open_clip_dissect.core.strategies.base import Decision, Strategy, uniform
from open_clip_dissect.core.strategies.registry import register


@register
class DivBS(Strategy):
    """Diversified batch selection (Hong et al., ICML 2024), reference-model free.

    Each candidate's feature is its ``contrastive_gradient`` (the gradient of its InfoNCE at
    the embeddings). Greedy, orthogonal-matching-pursuit style: the residual starts at the
    batch's mean gradient; each of the ``k`` rounds draws one unchosen sample with probability
    proportional to ``|g_i . r|`` (inverse-CDF on the device, no host sync), orthogonalises its
    gradient against the chosen basis (Gram-Schmidt) and removes that direction from the
    residual. Once the residual is spent, the remaining picks are uniform. Cost per batch:
    O(k B D + k^2 D) for B candidates of gradient width D (= 2 x embedding width), with k
    sequential rounds of batched vector operations.
    """

    name = "divbs"
    listing_order = 50
    summary = "diversified batch selection (greedy orthogonal coverage of the batch's gradients)"
    needs_loss = True
    needs_gradient = True

    def decide(self, scores, history, k, epoch, generator=None):
        grads = scores.gradient.float()
        n, width = grads.shape
        device = grads.device
        draws = uniform(k, generator, device)  # one per round: inverse-CDF sampling
        residual = grads.mean(0)
        basis = torch.zeros(k, width, device=device)
        available = torch.ones(n, dtype=torch.bool, device=device)
        picks = torch.empty(k, dtype=torch.long, device=device)
        scale = grads.norm(dim=1).max().clamp_min(1e-12)
        for t in range(k):
            weight = (grads @ residual).abs() * available
            weight = torch.where(weight.sum() > 0, weight, available.float())  # residual spent: uniform
            cumulative = torch.cumsum(weight, 0)
            target = torch.minimum(draws[t] * cumulative[-1], cumulative[-1] * (1 - 1e-6))
            # a 1-d index throughout: indexing with a 0-d tensor reads it on the host
            pick = torch.searchsorted(cumulative, target.reshape(1), right=True).clamp_max(n - 1)
            picks[t : t + 1] = pick
            available[pick] = False
            g = grads.index_select(0, pick)[0]
            direction = g - basis[:t].T @ (basis[:t] @ g)
            norm = direction.norm()
            direction = torch.where(norm > 1e-6 * scale, direction / norm.clamp_min(1e-30), torch.zeros_like(direction))
            basis[t] = direction
            residual = residual - (residual @ direction) * direction
        rank = torch.zeros(n, device=device)
        rank[picks] = (k - torch.arange(k, device=device, dtype=torch.float32)) / k  # pick order
        return Decision(picks, rank, torch.full((n,), float("nan"), device=device))
