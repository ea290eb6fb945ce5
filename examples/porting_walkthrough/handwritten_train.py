"""The "before" of docs/porting.md: a typical hand-written training script (blobs → class, accuracy, best.pt)."""

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_blobs(num: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    labels = torch.randint(0, 3, (num,), generator=g)
    points = centres[labels] + torch.randn(num, 2, generator=g)
    return TensorDataset(points, labels)


def main(out: str, epochs: int = 6) -> float:
    torch.manual_seed(0)
    train_set, val_set = make_blobs(512, seed=1), make_blobs(128, seed=2)
    train_loader = DataLoader(train_set, batch_size=32, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=64)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(train_loader))
    best = 0.0
    for epoch in range(epochs):
        model.train()
        for step, (points, labels) in enumerate(train_loader):
            loss = nn.functional.cross_entropy(model(points), labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            if step % 8 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f} lr {scheduler.get_last_lr()[0]:.2e}")
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for points, labels in val_loader:
                correct += (model(points).argmax(dim=1) == labels).sum().item()
                total += len(labels)
        accuracy = correct / total
        print(f"epoch {epoch} val accuracy {accuracy:.4f}")
        if accuracy > best:
            best = accuracy
            torch.save(model.state_dict(), out)
    return best


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "best.pt")
