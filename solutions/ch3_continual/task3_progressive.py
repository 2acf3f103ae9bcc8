"""Task 3.3 - progressive neural networks: frozen columns and lateral adapters. Solution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProgressiveNet(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int, num_layers: int = 2):
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.in_dim, self.hidden_dim, self.num_layers = in_dim, hidden_dim, num_layers
        # columns[k]["hidden"][l] is W_l of column k, columns[k]["out"] is W_out
        self.columns = nn.ModuleList()
        # laterals[k][j][l - 1] is U_l^{k,j} (l = 1..L-1) and laterals[k][j][L - 1] is U_out^{k,j}
        self.laterals = nn.ModuleList()

    def add_column(self, out_dim: int) -> int:
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"out_dim must be an int >= 1, got {out_dim!r}")
        for p in self.parameters():
            p.requires_grad_(False)
        k, h, L = len(self.columns), self.hidden_dim, self.num_layers
        hidden = nn.ModuleList([nn.Linear(self.in_dim, h)] + [nn.Linear(h, h) for _ in range(L - 1)])
        self.columns.append(nn.ModuleDict({"hidden": hidden, "out": nn.Linear(h, out_dim)}))
        self.laterals.append(nn.ModuleList(
            nn.ModuleList([nn.Linear(h, h, bias=False) for _ in range(L - 1)] + [nn.Linear(h, out_dim, bias=False)])
            for _ in range(k)))
        return k

    def forward(self, x: torch.Tensor, column: int) -> torch.Tensor:
        if not 0 <= column < len(self.columns):
            raise IndexError(f"column {column} does not exist ({len(self.columns)} columns)")
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x must be [B, {self.in_dim}], got {list(x.shape)}")
        acts: list[list[torch.Tensor]] = []  # acts[c][l] = h_l of column c
        for c in range(column + 1):
            layers = self.columns[c]["hidden"]
            hs = [F.relu(layers[0](x))]
            for l in range(1, self.num_layers):
                z = layers[l](hs[l - 1])
                for j in range(c):
                    z = z + self.laterals[c][j][l - 1](acts[j][l - 1])
                hs.append(F.relu(z))
            acts.append(hs)
        y = self.columns[column]["out"](acts[column][-1])
        for j in range(column):
            y = y + self.laterals[column][j][-1](acts[j][-1])
        return y
