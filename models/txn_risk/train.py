"""Train and export the second example model `txn-risk`.

A sequence model over a card holder's last 12 months of transactions: a GRU
reads the months oldest first, and its last state, with the account's
tenure, gives the probability that the account becomes delinquent within
three months. It has much more compute per row than `credit-default` (a
recurrent pass of 12 steps with 64 hidden units), so batching on a GPU
matters for it.

The data are synthetic, generated here from a fixed seed (no download): a
latent risk drives rising utilisation, falling repayment and cash advances,
and the label is drawn from it. Per month, 4 features in this order:
spend (thousands), payment_ratio (payment / balance, 0 to 1.5),
utilization (balance / limit, 0 to 1.5), cash_advances (count).

The exported TorchScript module takes float32 [N, 49]: the 48 values of
`history` ([12, 4], row-major: month by month) and then `tenure_months`;
it returns float32 [N, 1]. It carries its own input scaling. Training is
seeded and single-threaded, so it is deterministic.

Usage: python train.py --out txn-risk.pt
"""

import argparse
import json
import sys
import warnings

warnings.filterwarnings("ignore", message=".*NumPy.*")

import torch  # noqa: E402
from torch import nn  # noqa: E402

MONTHS, FEATURES = 12, 4


class TxnRisk(nn.Module):
    """Standardise, GRU over the months, then a small head with a sigmoid."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, t_mean: float, t_std: float):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.register_buffer("t_mean", torch.tensor([t_mean]))
        self.register_buffer("t_std", torch.tensor([t_std]))
        self.gru = nn.GRU(FEATURES, 64, batch_first=True)
        self.head = nn.Sequential(nn.Linear(65, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        seq = x[:, :48].reshape(n, 12, 4)  # MONTHS x FEATURES
        seq = (seq - self.mean) / self.std
        tenure = (x[:, 48:] - self.t_mean) / self.t_std
        _, h = self.gru(seq)
        return torch.sigmoid(self.head(torch.cat([h[-1], tenure], dim=1)))


def synthesize(n: int, gen: torch.Generator):
    """Histories and labels: a latent risk per account shapes its months."""
    risk = torch.randn(n, 1, generator=gen)
    t = torch.linspace(0, 1, MONTHS).unsqueeze(0)
    noise = lambda: torch.randn(n, MONTHS, generator=gen)  # noqa: E731
    spend = (2.0 + 0.8 * torch.randn(n, 1, generator=gen)).clamp(min=0.2) * (
        1 + 0.3 * risk * t
    ) + 0.3 * noise()
    payment = (0.9 - 0.35 * torch.sigmoid(2 * risk) * t - 0.1 * risk).clamp(0, 1.5) + 0.05 * noise()
    util = (0.35 + 0.25 * torch.sigmoid(risk) + 0.4 * torch.relu(risk) * t) + 0.05 * noise()
    cash = torch.poisson((0.2 + 0.8 * torch.relu(risk) * t).clamp(min=0.01), generator=gen)
    history = torch.stack(
        [spend.clamp(min=0), payment.clamp(0, 1.5), util.clamp(0, 1.5), cash], dim=2
    )
    tenure = torch.randint(3, 240, (n, 1), generator=gen).float()
    logit = 2.2 * risk - 0.004 * tenure + 1.5 * (util[:, -1:] - util[:, :1]) - 1.2
    label = torch.bernoulli(torch.sigmoid(logit), generator=gen)
    x = torch.cat([history.reshape(n, MONTHS * FEATURES), tenure], dim=1)
    return x.float(), label.float()


def auc(scores, labels):
    order = torch.argsort(scores)
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", type=int, default=12000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=20261130)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(args.seed)
    x, y = synthesize(args.rows, gen)
    split = int(0.8 * len(x))
    xtr, ytr, xte, yte = x[:split], y[:split], x[split:], y[split:]
    seq = xtr[:, : MONTHS * FEATURES].reshape(-1, MONTHS, FEATURES)
    mean, std = seq.mean(dim=(0, 1)), seq.std(dim=(0, 1)).clamp(min=1e-3)
    tenure = xtr[:, -1]
    model = TxnRisk(mean, std, float(tenure.mean()), float(tenure.std()))
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    loss_fn = nn.BCELoss()
    for _ in range(args.epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), 256):
            idx = perm[i : i + 256]
            opt.zero_grad()
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()

    model.eval()
    with torch.no_grad():
        p = model(xte).squeeze(1)
        acc = float(((p > 0.5).float() == yte.squeeze(1)).float().mean())
        metrics = {
            "train_loss": round(float(loss), 4),
            "test_accuracy": round(acc, 4),
            "test_auc": round(auc(p, yte.squeeze(1)), 4),
            "test_rows": len(xte),
        }
    torch.jit.script(model).save(args.out)
    json.dump(metrics, sys.stdout)
    print()


if __name__ == "__main__":
    main()
