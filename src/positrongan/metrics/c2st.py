"""Classifier two-sample test (C2ST; Lopez-Paz & Oquab 2017): the held-out accuracy of a small
CNN trained to tell one image set from another. 0.5 means the classifier cannot tell them apart;
1.0 means every image gives its set away.

Both sets are cut to the same size n (so chance is 0.5), shuffled, and split in halves; the CNN
is trained on one half of each set and scored on the other, then the halves swap (2-fold), and
the accuracy is the mean over the n * 2 held-out decisions. No pretrained network is involved.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def classifier(channels: int = 16) -> nn.Module:
    """Three strided 3x3 conv layers (LeakyReLU), global average pooling, one logit."""
    c = channels
    return nn.Sequential(
        nn.Conv2d(1, c, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * c, 1),
    )


def _fit_score(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    epochs: int,
    batch: int,
    gen: torch.Generator,
) -> int:
    """Train a fresh classifier on (x_train, y_train); the number of correct test decisions."""
    net = classifier().to(x_train.device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=gen).to(x_train.device)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            loss = loss_fn(net(x_train[idx])[:, 0], y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(x_test[i : i + 256])[:, 0] for i in range(0, len(x_test), 256)]) > 0
    return int((pred == (y_test > 0.5)).sum())


def c2st_accuracy(
    a: np.ndarray, b: np.ndarray, epochs: int, seed: int, device="cpu", batch: int = 32
) -> tuple[float, int]:
    """Held-out accuracy of a CNN telling image set ``a`` from image set ``b``.

    Params:
        a, b: (N, S, S) and (M, S, S) images in [0, 1].
        epochs: training epochs per fold.
        seed: subsampling, split, initialisation and batch order.
        device: torch device.
        batch: mini-batch size.
    Returns:
        (accuracy in [0, 1], n images per set used).
    Raises:
        ValueError: fewer than 2 images in a set.
    """
    n = min(len(a), len(b))
    if n < 2:
        raise ValueError(f"C2ST needs at least 2 images per set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    a = np.asarray(a, np.float32)[rng.permutation(len(a))[:n]]
    b = np.asarray(b, np.float32)[rng.permutation(len(b))[:n]]
    half = n // 2
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    correct = total = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(0, 2**62)))
        for fold in (0, 1):
            parts = [(x[:half], x[half:]) if fold == 0 else (x[half:], x[:half]) for x in (a, b)]
            (a_tr, a_te), (b_tr, b_te) = parts
            x_tr = torch.from_numpy(np.concatenate([a_tr, b_tr]))[:, None].to(device) * 2 - 1
            y_tr = torch.cat([torch.zeros(len(a_tr)), torch.ones(len(b_tr))]).to(device)
            x_te = torch.from_numpy(np.concatenate([a_te, b_te]))[:, None].to(device) * 2 - 1
            y_te = torch.cat([torch.zeros(len(a_te)), torch.ones(len(b_te))]).to(device)
            correct += _fit_score(x_tr, y_tr, x_te, y_te, epochs, batch, gen)
            total += len(y_te)
    return correct / total, n
