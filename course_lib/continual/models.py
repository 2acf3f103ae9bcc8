"""Networks of the continual-learning chapter.

* :func:`mlp`: van de Ven & Tolias' Split-MNIST classifier, two fully connected hidden
  layers of 400 ReLU units (here on 64 inputs instead of 784).
* :func:`small_cnn`: two conv blocks and a linear head for 32x32 ShapeWorld images.
* :class:`ProgressiveNet`: progressive neural networks (Rusu et al., 2016): one column
  per task, earlier columns frozen, lateral adapters from every earlier column.

Every network maps float32 inputs ``[B, ...]`` to logits ``[B, num_outputs]``; models
used by the strategies expose ``features(x) -> [B, H]`` (the last hidden layer) and a
final ``head`` ``nn.Linear`` so analyses can read representations and output weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """``in_features -> hidden x num_layers (ReLU) -> num_outputs``."""

    def __init__(self, in_features: int, num_outputs: int, hidden: int = 400, num_layers: int = 2) -> None:
        super().__init__()
        if min(in_features, num_outputs, hidden, num_layers) < 1:
            raise ValueError(f"all sizes must be >= 1, got in={in_features}, out={num_outputs}, "
                             f"hidden={hidden}, layers={num_layers}")
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(width, num_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden layer ``[B, hidden]``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def mlp(in_features: int, num_outputs: int, hidden: int = 400, num_layers: int = 2) -> MLP:
    """van de Ven's Split-MNIST network (2 x 400 ReLU) for ``in_features`` inputs."""
    return MLP(in_features, num_outputs, hidden, num_layers)


class SmallCNN(nn.Module):
    """``[B, 3, S, S] -> conv(16, stride 2) -> conv(32, stride 2) -> linear(hidden) -> head``.

    Strided convolutions instead of pooling keep a training step cheap on a CPU.
    """

    def __init__(self, num_outputs: int, image_size: int = 32, hidden: int = 128) -> None:
        super().__init__()
        if image_size % 4 or image_size < 8:
            raise ValueError(f"image_size must be a multiple of 4 and >= 8, got {image_size}")
        side = image_size // 4
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * side * side, hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def small_cnn(num_outputs: int, image_size: int = 32, hidden: int = 128) -> SmallCNN:
    return SmallCNN(num_outputs, image_size, hidden)


def build_model(input_shape: tuple[int, ...], num_outputs: int, hidden: int = 400) -> nn.Module:
    """An MLP for flat inputs ``(F,)``, a small CNN for images ``(3, S, S)``."""
    if len(input_shape) == 1:
        return mlp(input_shape[0], num_outputs, hidden)
    if len(input_shape) == 3 and input_shape[0] == 3 and input_shape[1] == input_shape[2]:
        return small_cnn(num_outputs, input_shape[1])
    raise ValueError(f"no default network for inputs of shape {input_shape}: expected (F,) or (3, S, S)")


class ProgressiveNet(nn.Module):
    """Progressive neural network over flat inputs (Rusu et al., 2016).

    Column ``k`` computes ``h0 = relu(W0 x)``, ``h_l = relu(W_l h_{l-1} + sum_{j<k}
    U_l^{k,j} h_{l-1}^{(j)})`` and ``y = W_out h_{L-1} + sum_{j<k} U_out^{k,j}
    h_{L-1}^{(j)}``; ``W`` have biases, the lateral adapters ``U`` do not. Adding a
    column freezes all earlier ones, so an earlier column's output can never change:
    zero forgetting by construction, at the price of parameters growing quadratically
    with the number of tasks.
    """

    def __init__(self, in_dim: int, hidden_dim: int, num_layers: int = 2) -> None:
        super().__init__()
        if min(in_dim, hidden_dim, num_layers) < 1:
            raise ValueError(f"need in_dim, hidden_dim, num_layers >= 1, got {in_dim}, {hidden_dim}, {num_layers}")
        self.in_dim, self.hidden_dim, self.num_layers = in_dim, hidden_dim, num_layers
        self.columns = nn.ModuleList()  # column k: ModuleList of num_layers Linear + the output Linear
        self.laterals = nn.ModuleList()  # column k: ModuleList over layers 1..L (incl. output) of ModuleList over j<k

    @property
    def num_columns(self) -> int:
        return len(self.columns)

    def add_column(self, out_dim: int) -> int:
        """Freeze every existing column, append a new one with ``out_dim`` outputs; return its index."""
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim}")
        for p in self.parameters():
            p.requires_grad_(False)
        k = self.num_columns
        dims = [self.in_dim] + [self.hidden_dim] * self.num_layers
        col = nn.ModuleList([nn.Linear(dims[i], dims[i + 1]) for i in range(self.num_layers)])
        col.append(nn.Linear(self.hidden_dim, out_dim))
        lat = nn.ModuleList()
        for layer in range(1, self.num_layers + 1):
            width_out = self.hidden_dim if layer < self.num_layers else out_dim
            adapters = nn.ModuleList([nn.Linear(self.hidden_dim, width_out, bias=False) for _ in range(k)])
            for a in adapters:  # small initial lateral influence
                nn.init.uniform_(a.weight, -1 / math.sqrt(self.hidden_dim * max(k, 1)), 1 / math.sqrt(self.hidden_dim * max(k, 1)))
            lat.append(adapters)
        self.columns.append(col)
        self.laterals.append(lat)
        return k

    def _hidden(self, x: torch.Tensor, upto: int) -> list[list[torch.Tensor]]:
        """Per column ``0..upto``, the list of its hidden activations ``[h_0, ..., h_{L-1}]``."""
        x = x.flatten(1)
        acts: list[list[torch.Tensor]] = []
        for k in range(upto + 1):
            col, lat = self.columns[k], self.laterals[k]
            h = torch.relu(col[0](x))
            hs = [h]
            for layer in range(1, self.num_layers):
                z = col[layer](h)
                for j in range(k):
                    z = z + lat[layer - 1][j](acts[j][layer - 1])
                h = torch.relu(z)
                hs.append(h)
            acts.append(hs)
        return acts

    def forward(self, x: torch.Tensor, column: int) -> torch.Tensor:
        """Logits ``[B, out_dim]`` of ``column`` for inputs ``[B, in_dim]`` (or any shape flattening to it)."""
        if not 0 <= column < self.num_columns:
            raise IndexError(f"column {column} does not exist: the network has {self.num_columns} column(s)")
        acts = self._hidden(x, column)
        k = column
        y = self.columns[k][-1](acts[k][-1])
        for j in range(k):
            y = y + self.laterals[k][-1][j](acts[j][-1])
        return y
