"""Linear probes and representation similarity for the probe attack ("Are We Truly Forgetting?": a concept can stay
linearly decodable inside a network whose outputs hide it).

- :func:`fit_linear_probe`: L2-regularised logistic regression (full-batch L-BFGS on standardised features);
- :func:`probe_accuracy`: held-out accuracy over k folds, with a shuffled-label control (a probe that decodes noise
  as well as the labels proves nothing);
- :func:`linear_cka`: linear centred kernel alignment (Kornblith et al., ICML 2019) between two feature matrices.
"""

from __future__ import annotations

import torch


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-2, iters: int = 100) -> tuple[torch.Tensor, ...]:
    """A logistic-regression probe on features ``x [N, D]`` for boolean labels ``y [N]``.

    Returns ``(weight [D], bias [], mean [D], std [D])``; score new features with :func:`probe_logits`.
    """
    x, y = x.double(), y.double()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-8)
    z = (x - mean) / std
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach(), mean, std


def probe_logits(probe: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
    """The probe's logits for features ``x [N, D]``."""
    w, b, mean, std = probe
    return ((x.double() - mean) / std) @ w + b


def probe_accuracy(
    x: torch.Tensor, y: torch.Tensor, folds: int = 4, l2: float = 1e-2, seed: int = 0
) -> dict[str, float]:
    """Held-out accuracy of a linear probe over ``folds`` folds (balanced by shuffling with ``seed``), and the same
    probe's accuracy on shuffled labels (``control``; near chance unless the probe memorises).

    Example:
        >>> x = torch.randn(64, 5); y = x[:, 0] > 0
        >>> probe_accuracy(x, y)["accuracy"] > 0.9
        True
    """
    y = torch.as_tensor(y).bool()
    if len(x) != len(y) or len(x) < 2 * folds:
        raise ValueError(
            f"probe_accuracy needs >= {2 * folds} labelled samples, got {len(x)} features, {len(y)} labels"
        )
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    shuffled = y[torch.randperm(len(y), generator=g)]
    out = {}
    for name, labels in (("accuracy", y), ("control", shuffled)):
        hits = 0
        for k in range(folds):
            test = order[k::folds]
            train = torch.cat([order[j::folds] for j in range(folds) if j != k])
            probe = fit_linear_probe(x[train], labels[train], l2)
            hits += int(((probe_logits(probe, x[test]) > 0) == labels[test]).sum())
        out[name] = hits / len(x)
    out["majority"] = max(float(y.float().mean()), 1 - float(y.float().mean()))
    return out


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between ``x [N, D1]`` and ``y [N, D2]`` (rows are the same inputs): 1 for representations equal up
    to rotation and isotropic scaling, near 0 for unrelated ones.

    Example:
        >>> x = torch.randn(32, 8)
        >>> round(linear_cka(x, 3 * x @ torch.linalg.qr(torch.randn(8, 8))[0]), 6)
        1.0
    """
    if len(x) != len(y):
        raise ValueError(f"linear_cka needs the same inputs on both sides, got {len(x)} and {len(y)} rows")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = (x.T @ y).square().sum()
    denom = (x.T @ x).square().sum().sqrt() * (y.T @ y).square().sum().sqrt()
    return float(cross / denom) if float(denom) > 0 else 0.0
