"""Small PyTorch models the export tests name as ``torch_models:FACTORY``."""

from __future__ import annotations

import torch


class TinyCnn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        return self.head(y.mean(dim=(2, 3)))


def tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyCnn()


def not_a_module() -> int:
    return 3
