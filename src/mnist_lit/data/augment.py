"""Augmentation of whole batches of tensors: one random affine warp per image, in one call.

Per-image PIL transforms cost a Python round trip per image; here a batch of images gets its
random shifts, rotations and zooms as ``[B, 2, 3]`` matrices and one ``grid_sample``, on
whatever device the batch is on. The draws come from a generator the caller seeds, so a batch
is augmented the same way in a resumed run as in an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


class RandomAffine:
    """Random translation, rotation and zoom of a batch ``[B, C, H, W]`` of images in [0, 1].

    Args:
        shift: largest translation, in pixels, along each axis (uniform in ``[-shift, shift]``).
        degrees: largest rotation, in degrees, either way.
        scale: largest relative zoom, either way (0.1: between 0.9x and 1.1x).
    Pixels moved in from outside the image are 0 (MNIST's black background).
    """

    def __init__(self, shift: float = 0.0, degrees: float = 0.0, scale: float = 0.0) -> None:
        if shift < 0 or degrees < 0 or not 0 <= scale < 1:
            raise ValueError(
                f"augmentation needs shift >= 0, degrees >= 0 and scale in [0, 1), "
                f"got shift={shift}, degrees={degrees}, scale={scale}"
            )
        self.shift, self.degrees, self.scale = shift, degrees, scale

    @property
    def enabled(self) -> bool:
        return bool(self.shift or self.degrees or self.scale)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        batch, _, height, width = images.shape

        def uniform(limit: float) -> Tensor:  # in [-limit, limit], drawn on the CPU generator
            return (torch.rand(batch, generator=generator) * 2 - 1) * limit

        angle = uniform(math.radians(self.degrees))
        zoom = 1 + uniform(self.scale)
        # affine_grid works in [-1, 1] coordinates: a pixel is 2 / size wide
        shift_x, shift_y = uniform(self.shift) * 2 / width, uniform(self.shift) * 2 / height
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
        ).to(device=images.device, dtype=images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", align_corners=False)
