"""Augmentation of whole batches of tensors: each image its own draw, the batch in a few calls.

Per-image PIL transforms cost a Python round trip per image; here a batch of images gets its
random shifts, rotations and zooms as ``[B, 2, 3]`` matrices and one ``grid_sample``, and
``DigitAugment`` adds what people's digits differ from MNIST's by (stroke width, blur, coarse
scans, faded ink, paper grain) as pooling, grouped convolutions and resizes, on whatever device
the batch is on. The draws come from a generator the caller seeds, so a batch
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


class DigitAugment:
    """What separates people's digits from MNIST's, drawn per image of a batch ``[B, 1, H, W]``.

    On top of ``RandomAffine``'s shifts, rotations and zooms, each image gets its own draw of:

    Args:
        thicken, thin: the most pixels strokes grow or shrink by (the change is uniform in
            ``[-thin, thicken]``): grey-level dilation (a 3x3 max) thickens, erosion thins,
            fractions blend between the steps. MNIST's strokes are 2-3 px wide, so much
            thinning erases them: the two limits are apart.
        blur: largest Gaussian blur sigma, in pixels (uniform in ``[0, blur]``).
        low_res: largest loss of resolution: the image goes down to a side of ``(1 - u) * H``
            pixels, ``u`` uniform in ``[0, low_res]``, and back up (a coarse scan, enlarged).
        contrast: largest gamma change, as ``|log gamma|``: faded or saturated ink.
        faint: largest loss of ink: the image is multiplied by ``1 - u``, ``u`` uniform in
            ``[0, faint]`` (a hairline shrunk into the 20x20 box keeps a fraction of its ink).
        noise: largest standard deviation of the Gaussian noise added (clipped to [0, 1]).
        p: the share of images augmented at all; the others stay as they are, so the model
            still sees MNIST's own digits (1: every image).
    An effect whose strength is 0 is skipped, so all zeros is the identity. Images are in [0, 1]
    and stay there; the draws come from ``generator`` alone, in a fixed order.
    """

    def __init__(
        self,
        shift: float = 0.0,
        degrees: float = 0.0,
        scale: float = 0.0,
        thicken: float = 0.0,
        thin: float = 0.0,
        blur: float = 0.0,
        low_res: float = 0.0,
        contrast: float = 0.0,
        faint: float = 0.0,
        noise: float = 0.0,
        p: float = 1.0,
    ) -> None:
        if min(thicken, thin, blur, contrast, noise) < 0 or not (
            0 <= low_res < 1 and 0 <= faint < 1 and 0 < p <= 1
        ):
            raise ValueError(
                "augmentation needs thicken, thin, blur, contrast, noise >= 0, low_res and faint "
                f"in [0, 1) and p in (0, 1], got thicken={thicken}, thin={thin}, blur={blur}, "
                f"low_res={low_res}, contrast={contrast}, faint={faint}, noise={noise}, p={p}"
            )
        self.affine = RandomAffine(shift, degrees, scale)
        self.thicken, self.thin, self.blur, self.low_res = thicken, thin, blur, low_res
        self.contrast, self.faint, self.noise, self.p = contrast, faint, noise, p

    @property
    def enabled(self) -> bool:
        return self.affine.enabled or bool(
            self.thicken
            or self.thin
            or self.blur
            or self.low_res
            or self.contrast
            or self.faint
            or self.noise
        )

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        batch, original = images.shape[0], images

        def uniform(low: float, high: float) -> Tensor:  # [B] on the CPU generator, then moved
            draw = torch.rand(batch, generator=generator) * (high - low) + low
            return draw.to(device=images.device, dtype=images.dtype)

        if self.thicken or self.thin:
            images = change_thickness(images, uniform(-self.thin, self.thicken))
        if self.affine.enabled:
            images = self.affine(images, generator)
        if self.blur:
            images = gaussian_blur(images, uniform(0, self.blur))
        if self.low_res:
            images = lower_resolution(images, uniform(0, self.low_res))
        if self.contrast:
            gamma = uniform(-self.contrast, self.contrast).exp()
            images = images.clamp_min(0).pow(gamma.view(-1, 1, 1, 1))
        if self.faint:
            images = images * (1 - uniform(0, self.faint)).view(-1, 1, 1, 1)
        if self.noise:
            sigma = uniform(0, self.noise).view(-1, 1, 1, 1)
            noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
            images = (images + sigma * noise).clamp(0, 1)
        if self.p < 1:
            keep = uniform(0, 1).view(-1, 1, 1, 1) >= self.p
            images = torch.where(keep, original, images)
        return images


def change_thickness(images: Tensor, pixels: Tensor) -> Tensor:
    """Thicken (``pixels > 0``) or thin (``< 0``) the strokes of each image by ``pixels[i]``.

    Steps of one pixel are 3x3 grey-level dilations or erosions; a fraction blends the two
    nearest steps, so the change is continuous in ``pixels``.
    """
    reach = math.ceil(float(pixels.abs().max()))
    if reach == 0:
        return images
    grown, shrunk = images, images
    thicker, thinner = [], []
    for _ in range(reach):
        grown, shrunk = max_3x3(grown), -max_3x3(-shrunk)
        thicker.append(grown)
        thinner.append(shrunk)
    steps = [*reversed(thinner), images, *thicker]  # from `reach` pixels thinner to thicker
    stack = torch.stack(steps)  # [2 * reach + 1, B, C, H, W]
    position = (pixels + reach).clamp(0, 2 * reach)
    lower = position.floor().long().clamp(max=2 * reach - 1)
    weight = (position - lower).view(-1, 1, 1, 1)
    index = torch.arange(images.shape[0], device=images.device)
    return stack[lower, index] * (1 - weight) + stack[lower + 1, index] * weight


def max_3x3(images: Tensor) -> Tensor:
    """The largest value of each pixel's 3x3 neighbourhood (edges replicated).

    Two separable passes of shifted maxima: on the CPU 30x faster than ``max_pool2d`` with
    stride 1, and the same result.
    """
    rows = F.pad(images, (1, 1, 0, 0), mode="replicate")
    rows = torch.maximum(torch.maximum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])
    cols = F.pad(rows, (0, 0, 1, 1), mode="replicate")
    return torch.maximum(torch.maximum(cols[..., :-2, :], cols[..., 1:-1, :]), cols[..., 2:, :])


def gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Blur image ``i`` with a Gaussian of ``sigma[i]`` pixels (0: unchanged), separably.

    One grouped convolution per axis with a kernel per image: the batch becomes the channels.
    """
    batch, channels, height, width = images.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    spread = sigma.clamp_min(1e-3).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets / spread) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, 0)
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernel.view(-1, 1, 1, 2 * radius + 1), groups=batch * channels)
    flat = F.conv2d(flat, kernel.view(-1, 1, 2 * radius + 1, 1), groups=batch * channels)
    return flat.view(batch, channels, height, width)


def lower_resolution(images: Tensor, loss: Tensor) -> Tensor:
    """Shrink image ``i`` to ``round((1 - loss[i]) * side)`` pixels (area average) and enlarge
    it back (bilinear): the detail of a coarse scan. Images of one target size go together.
    """
    height, width = images.shape[-2:]
    sides = ((1 - loss) * height).round().long().clamp(2, height)
    result = images.clone()
    for side in sides.unique().tolist():
        if side == height:
            continue
        chosen = (sides == side).nonzero().flatten()
        small_width = max(2, round(side * width / height))
        small = F.interpolate(images[chosen], size=(side, small_width), mode="area")
        result[chosen] = F.interpolate(
            small, size=(height, width), mode="bilinear", align_corners=False
        )
    return result
