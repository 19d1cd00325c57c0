"""ZCA whitening, fit on the training split (used by trajectory matching on CIFAR-10)."""

from __future__ import annotations

import torch


def fit_zca(images: torch.Tensor, regularization: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit ZCA on normalised images [N, C, H, W].

    Returns ``(mean [D], whitening [D, D], inverse [D, D])`` with D = C*H*W. ``regularization`` is added
    to the eigenvalues of the covariance (as kornia's ``ZCAWhitening(eps=0.1)`` used by MTT), which
    keeps the map invertible so whitened images can still be shown as pixels. Computed in float64.
    """
    flat = images.flatten(1).double()
    mean = flat.mean(0)
    centred = flat - mean
    covariance = centred.T @ centred / (len(flat) - 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    scale = (eigenvalues.clamp_min(0) + regularization).rsqrt()
    whitening = (eigenvectors * scale) @ eigenvectors.T
    inverse = (eigenvectors / scale) @ eigenvectors.T
    return mean.float(), whitening.float(), inverse.float()
