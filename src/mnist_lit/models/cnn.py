"""A small convolutional network: conv blocks, then a classifier head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class CNN(nn.Module):
    """``[(Conv3x3 -> BatchNorm? -> ReLU) * convs_per_block -> MaxPool2] * len(channels) -> head``.

    Each block halves the image side (28 -> 14 -> 7). The head is one hidden ``Linear`` layer
    (BatchNorm and dropout there, as in the MLP) and the output layer.

    Args:
        channels: output channels of each conv block.
        hidden: width of the head's hidden layer.
        dropout: drop probability before the output layer (0 turns it off).
        batchnorm: BatchNorm after every conv and after the hidden ``Linear``.
        width: multiplies every channel count and the hidden width (one knob for a search).
        convs_per_block: conv layers before each pooling (2 = VGG-style blocks: more depth for
            little extra cost after the first block).
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.0,
        batchnorm: bool = True,
        width: float = 1.0,
        convs_per_block: int = 1,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        features, side = in_channels, image_size
        hidden = max(1, round(hidden * width))
        for out in [max(1, round(c * width)) for c in channels]:
            for _ in range(convs_per_block):
                blocks.append(
                    nn.Conv2d(features, out, kernel_size=3, padding=1, bias=not batchnorm)
                )
                if batchnorm:
                    blocks.append(nn.BatchNorm2d(out))
                blocks.append(nn.ReLU(inplace=True))
                features = out
            blocks.append(nn.MaxPool2d(2))
            side //= 2
        self.features = nn.Sequential(*blocks)

        head: list[nn.Module] = [
            nn.Flatten(),
            nn.Linear(features * side * side, hidden, bias=not batchnorm),
        ]
        if batchnorm:
            head.append(nn.BatchNorm1d(hidden))
        head.append(nn.ReLU(inplace=True))
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(hidden, num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))
