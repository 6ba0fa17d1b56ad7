"""Train and export the reference model `credit-default`.

A small MLP on the Default data set of "An Introduction to Statistical
Learning" (shipped by the PyPI package `islp` as `ISLP/data/Default.csv`).
Features, in schema order: student (0/1), balance, income. Target: default.

The exported TorchScript module carries its own input scaling, so the file
alone defines the function: float32 [N, 3] in, float32 [N, 1] probability of
default out. Training is seeded and single-threaded, so it is deterministic.

Usage: python train.py --csv Default.csv --out credit-default.pt
"""

import argparse
import csv
import json
import sys
import warnings

# torch warns at import when numpy is absent; nothing here needs numpy.
warnings.filterwarnings("ignore", message=".*NumPy.*")

import torch  # noqa: E402
from torch import nn  # noqa: E402


class CreditDefault(nn.Module):
    """Standardise the three features, then a 3-16-16-1 MLP with a sigmoid."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = nn.Sequential(
            nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net((x - self.mean) / self.std))


def load(path):
    xs, ys = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            xs.append(
                [1.0 if row["student"] == "Yes" else 0.0, float(row["balance"]), float(row["income"])]
            )
            ys.append([1.0 if row["default"] == "Yes" else 0.0])
    return torch.tensor(xs, dtype=torch.float32), torch.tensor(ys, dtype=torch.float32)


def auc(scores, labels):
    """Area under the ROC curve by the rank-sum formula."""
    order = torch.argsort(scores)
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--seed", type=int, default=20261129)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    x, y = load(args.csv)
    perm = torch.randperm(len(x))
    split = int(0.8 * len(x))
    train, test = perm[:split], perm[split:]
    mean, std = x[train].mean(0), x[train].std(0)

    model = CreditDefault(mean, std)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.BCELoss()
    for _ in range(args.epochs):
        opt.zero_grad()
        loss = loss_fn(model(x[train]), y[train])
        loss.backward()
        opt.step()

    model.eval()
    with torch.no_grad():
        p = model(x[test]).squeeze(1)
        acc = float(((p > 0.5).float() == y[test].squeeze(1)).float().mean())
        metrics = {
            "train_loss": float(loss),
            "test_accuracy": round(acc, 4),
            "test_auc": round(auc(p, y[test].squeeze(1)), 4),
            "test_rows": len(test),
        }
    scripted = torch.jit.script(model)
    scripted.save(args.out)
    json.dump(metrics, sys.stdout)
    print()


if __name__ == "__main__":
    main()
