"""A multi-layer perceptron on flattened images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """``input -> [Linear -> BatchNorm? -> ReLU -> Dropout?] * len(hidden_sizes) -> Linear``.

    Args:
        hidden_sizes: width of each hidden layer.
        dropout: drop probability after each hidden layer (0 turns it off).
        batchnorm: put ``BatchNorm1d`` between each hidden ``Linear`` and its ReLU.
        width: multiplies every hidden size (one knob for a search across models).
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (512, 256),
        dropout: float = 0.0,
        batchnorm: bool = True,
        width: float = 1.0,
        in_features: int = 28 * 28,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        features = in_features
        for hidden in [max(1, round(size * width)) for size in hidden_sizes]:
            # a bias before BatchNorm is redundant: BN subtracts the mean anyway
            layers.append(nn.Linear(features, hidden, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            features = hidden
        layers.append(nn.Linear(features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)
