"""Batched Keras-style image augmentation on the training device.

:class:`Augmentation` holds the knobs of Keras's ``ImageDataGenerator`` under
the same names (so a study's ``search_space`` keys are exactly
``rotation_range``, ``width_shift_range``, ...), plus ``augment_prob``,
``mixup_alpha`` and ``cutout_size``. :class:`BatchAugmenter` draws one
transform per image from a seeded ``torch.Generator`` and applies the whole
batch with a single ``affine_grid`` / ``grid_sample`` call.

Semantics follow Keras's ``ImageDataGenerator.random_transform`` and
``apply_affine_transform`` as released in keras-preprocessing 1.1.2 (which
Keras 2's ``keras.preprocessing.image`` wraps): they call
``scipy.ndimage.affine_transform(mode=fill_mode, order=1, cval=cval)`` on one
channel at a time.

- rotation: angle uniform in [-rotation_range, rotation_range] degrees; with
  Keras's matrices a positive angle turns the content clockwise on screen
  (row 0 at the top), so +90 on a square image equals
  ``torch.rot90(x, -1, dims=(-2, -1))``;
- shifts: uniform in [-f, f] of the height / width (Keras's ``tx`` / ``ty``,
  in pixels; as in Keras a positive shift moves the content up / left);
- shear: angle uniform in [-shear_range, shear_range] in **degrees**, as in
  Keras 2 (``np.deg2rad(shear)``), so the seed's ``shear_range=0.2`` is a
  0.2-degree shear, exactly what it was in Keras;
- zoom: factors uniform in [1 - z, 1 + z], drawn independently for rows and
  columns; as in Keras a factor below 1 enlarges the content;
- flips: each with probability 0.5 when enabled, applied after the affine part;
- fill_mode: ``nearest`` (edge pixels repeated; grid_sample ``border``),
  ``reflect`` (``dcba|abcd|dcba``; ``reflection``) and ``constant``: SciPy's
  ``constant`` as Keras asks for it (not ``grid-constant``): a source point
  beyond the outermost pixel centres gives ``cval``, any other interpolates
  image pixels only (``border`` sampling, then a mask; see :func:`warp`).

Where we differ from Keras, on purpose:

- the centre: keras-preprocessing 1.1.2's ``transform_matrix_offset_center``
  uses ``h / 2 + 0.5``, one pixel below / right of the image centre
  ``(h - 1) / 2`` that we (and later Keras) use. Its output for a draw equals
  ours for the same draw with the shift changed by ``R^-1 (A - I) (1, 1)``
  pixels (``A`` the affine part); tests/image/test_augment.py checks exactly
  that against Keras's code, copied verbatim, in all three fill modes;
- the axes: Keras 3's ``keras/src/legacy/preprocessing/image.py`` (and
  recent tf.keras, e.g. TensorFlow issue 82838 on TF 2.18) exchanges rows and
  columns in the matrix (``M' = PMP``, from keras-preprocessing PR 318, after
  1.1.2), so there ``height_shift_range`` moves images sideways (tf-keras
  issue 310), rotations turn the other way and shear acts along the other
  axis. We keep the documented meaning: ``height_shift_range`` moves rows.

Images are float tensors ``(N, C, H, W)`` in the units ``cval`` is given in
(the image trainer uses [0, 1]). Coordinates use the pixel-centre convention
(``align_corners=False``), which makes flips, 90° turns of square images and
whole-pixel shifts exact, in every fill mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

__all__ = [
    "AUGMENTATION_KNOBS",
    "AUGMENTATION_PRESETS",
    "Augmentation",
    "AugmentationPreset",
    "BatchAugmenter",
    "FillMode",
    "TransformParams",
    "affine_matrices",
    "warp",
]


class FillMode(str, Enum):
    """How points outside the image are filled (Keras ``fill_mode``)."""

    NEAREST = "nearest"
    CONSTANT = "constant"
    REFLECT = "reflect"


#: fill_mode -> grid_sample padding_mode. ``constant`` samples with ``border`` and
#: then sets the points outside the image to cval (see :func:`warp`).
_PADDING: dict[FillMode, str] = {
    FillMode.NEAREST: "border",
    FillMode.REFLECT: "reflection",
    FillMode.CONSTANT: "border",
}


class Augmentation(BaseModel):
    """The augmentation knobs (mix into a trainer's ``Settings``); all default to off."""

    model_config = ConfigDict(extra="forbid")

    rotation_range: float = Field(0.0, ge=0, le=180, description="Degrees, uniform in [-r, r].")
    width_shift_range: float = Field(0.0, ge=0, lt=1, description="Fraction of the width.")
    height_shift_range: float = Field(0.0, ge=0, lt=1, description="Fraction of the height.")
    shear_range: float = Field(0.0, ge=0, lt=90, description="Shear angle in degrees (as Keras 2).")
    zoom_range: float = Field(0.0, ge=0, lt=1, description="Zoom factors in [1 - z, 1 + z] per axis.")
    horizontal_flip: bool = False
    vertical_flip: bool = False
    fill_mode: FillMode = FillMode.NEAREST
    cval: float = Field(0.0, description="Fill value for fill_mode constant (and cutout).")
    augment_prob: float = Field(1.0, ge=0, le=1, description="Probability that an image is augmented at all.")
    mixup_alpha: float = Field(0.0, ge=0, description="Mixup: λ ~ Beta(α, α) per batch, labels mixed too; 0: off.")
    cutout_size: float = Field(
        0.0, ge=0, lt=1, description="Cutout: a square of this fraction of each side set to cval; 0: off."
    )

    @property
    def geometric(self) -> bool:
        """True when some affine part or flip can change an image."""
        return bool(
            self.rotation_range
            or self.width_shift_range
            or self.height_shift_range
            or self.shear_range
            or self.zoom_range
            or self.horizontal_flip
            or self.vertical_flip
        )

    @property
    def active(self) -> bool:
        """True when the augmentation can change a batch."""
        per_image = (self.geometric or self.cutout_size > 0) and self.augment_prob > 0
        return per_image or self.mixup_alpha > 0


#: Names of the augmentation knobs (each may be a ``search_space`` key).
AUGMENTATION_KNOBS: frozenset[str] = frozenset(Augmentation.model_fields)


class AugmentationPreset(str, Enum):
    """Named sets of knob values (``augmentation_preset``)."""

    NONE = "none"
    KERAS_SEED = "keras_seed"


#: preset -> knob values. ``keras_seed`` is the seed article's ImageDataGenerator.
AUGMENTATION_PRESETS: dict[AugmentationPreset, dict[str, Any]] = {
    AugmentationPreset.NONE: {name: field.default for name, field in Augmentation.model_fields.items()},
    AugmentationPreset.KERAS_SEED: {
        **{name: field.default for name, field in Augmentation.model_fields.items()},
        "rotation_range": 20.0,
        "width_shift_range": 0.2,
        "height_shift_range": 0.2,
        "shear_range": 0.2,
        "zoom_range": 0.2,
        "horizontal_flip": True,
        "fill_mode": FillMode.NEAREST,
    },
}


@dataclass
class TransformParams:
    """One affine draw per image, in Keras's terms (1-D tensors of length N).

    ``theta`` and ``shear`` are degrees; ``tx`` / ``ty`` are pixels along
    rows / columns (Keras: ``tx`` from ``height_shift_range``); ``zx`` / ``zy``
    are the row / column zoom factors; ``flip_h`` / ``flip_v`` are booleans.
    """

    theta: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    shear: torch.Tensor
    zx: torch.Tensor
    zy: torch.Tensor
    flip_h: torch.Tensor
    flip_v: torch.Tensor

    @staticmethod
    def identity(n: int) -> TransformParams:
        import torch

        def zeros() -> torch.Tensor:
            return torch.zeros(n, dtype=torch.float64)

        def no() -> torch.Tensor:
            return torch.zeros(n, dtype=torch.bool)

        return TransformParams(zeros(), zeros(), zeros(), zeros(), zeros() + 1, zeros() + 1, no(), no())


def affine_matrices(params: TransformParams, height: int, width: int) -> torch.Tensor:
    """``(N, 2, 3)`` float64 ``theta`` for ``affine_grid`` (align_corners=False).

    Built as Keras does, in centred pixel coordinates (row, col) mapping an
    output pixel to the input pixel it samples: ``A = R @ Sh @ Z @ F`` and
    offset ``R @ (tx, ty)``, then rescaled to grid_sample's normalised (x, y).
    Computed in closed form with NumPy: a handful of vector operations per
    batch, whatever its size.
    """
    import numpy as np
    import torch

    def arr(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float64, copy=False)

    th, sh = np.deg2rad(arr(params.theta)), np.deg2rad(arr(params.shear))
    c, s = np.cos(th), np.sin(th)
    ssh, csh = np.sin(sh), np.cos(sh)
    zx = arr(params.zx) * np.where(arr(params.flip_v), -1.0, 1.0)
    zy = arr(params.zy) * np.where(arr(params.flip_h), -1.0, 1.0)
    tx, ty = arr(params.tx), arr(params.ty)
    # R @ Sh @ diag(zx, zy) (flips folded into the zooms), in (row, col).
    a_rr, a_rc = c * zx, (-c * ssh - s * csh) * zy
    a_cr, a_cc = s * zx, (-s * ssh + c * csh) * zy
    t_r, t_c = c * tx - s * ty, s * tx + c * ty
    # (row, col) -> (x, y) = (col, row); pixels -> normalised units (2 / size per pixel).
    half_w, half_h = width / 2.0, height / 2.0
    theta = np.empty((th.shape[0], 2, 3), dtype=np.float64)
    theta[:, 0, 0] = a_cc
    theta[:, 0, 1] = a_cr * half_h / half_w
    theta[:, 0, 2] = t_c / half_w
    theta[:, 1, 0] = a_rc * half_w / half_h
    theta[:, 1, 1] = a_rr
    theta[:, 1, 2] = t_r / half_h
    return torch.from_numpy(theta)


def warp(
    images: torch.Tensor,
    params: TransformParams,
    *,
    fill_mode: FillMode | str = FillMode.NEAREST,
    cval: float = 0.0,
) -> torch.Tensor:
    """Apply each image's affine transform (and flips) in one batched bilinear resample.

    ``constant`` follows ``scipy.ndimage.affine_transform(mode="constant",
    order=1)``, the call Keras makes: an output pixel whose source point lies
    outside the input's pixel centres (row outside ``[0, H - 1]`` or column
    outside ``[0, W - 1]``) is ``cval``; every other pixel interpolates image
    pixels only, never ``cval``. The edge test allows the grid's round-off
    (:func:`_outside`), so whole-pixel shifts, flips and 90-degree turns keep
    their edge pixels.
    """
    import torch
    import torch.nn.functional as F

    fill = FillMode(fill_mode)
    n, _, height, width = images.shape
    # The grid is at least float32: half-precision coordinates would blur the edge test.
    exact = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    theta = affine_matrices(params, height, width).to(images.device, dtype=exact)
    grid = F.affine_grid(theta, [n, images.shape[1], height, width], align_corners=False)
    # constant: inside the pixel centres every bilinear neighbour with a non-zero weight is
    # an image pixel, so "border" padding only ever meets zero weights; outside, _outside masks.
    out = F.grid_sample(
        images, grid.to(images.dtype), mode="bilinear", padding_mode=_PADDING[fill], align_corners=False
    )
    if fill is FillMode.CONSTANT:
        out = out.masked_fill(_outside(grid, height, width).unsqueeze(1), cval)
    return out


def _outside(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, H, W)``: True where the source point lies outside the input's pixel centres.

    ``grid`` is ``affine_grid``'s normalised (x, y) with ``align_corners=False``:
    pixel column ``= ((x + 1) * W - 1) / 2``. SciPy's test is exact; ours allows
    64 ulps of the grid's dtype per pixel of extent, so a source point that is on
    the edge in exact arithmetic (a flip, a whole-pixel shift, a 90-degree turn)
    counts as inside whatever the round-off. That band is 1.7e-3 pixel for a
    224-pixel float32 image, and below 1e-11 pixel for float64 up to 1000 pixels;
    only there can a pixel differ from SciPy's (its edge value instead of cval).
    """
    import torch

    slack = 64 * torch.finfo(grid.dtype).eps * max(height, width)
    col = ((grid[..., 0] + 1) * width - 1) / 2
    row = ((grid[..., 1] + 1) * height - 1) / 2
    return (col < -slack) | (col > width - 1 + slack) | (row < -slack) | (row > height - 1 + slack)


class BatchAugmenter:
    """Augments training batches on their device; draws come from a seeded generator.

    Use as ``train_transform`` of :func:`hpsearch.trainers.torch._loop.train_loop`:
    called with a batch dict (``pixel_values`` ``(N, C, H, W)``, ``labels``)
    already on the training device, it returns the augmented batch. With
    mixup the labels become soft ``(N, num_classes)`` probabilities, which
    ``F.cross_entropy`` (and so :func:`training_loss`) accepts.

    Two augmenters with the same settings and seed produce the same sequence
    of draws; random numbers are drawn on the CPU, so the sequence does not
    depend on the device.
    """

    def __init__(
        self,
        augmentation: Augmentation,
        *,
        num_classes: int | None = None,
        seed: int = 0,
        key: str = "pixel_values",
    ) -> None:
        import torch

        self.augmentation = augmentation
        self.num_classes = num_classes
        self.key = key
        self.generator = torch.Generator().manual_seed(int(seed))
        if augmentation.mixup_alpha > 0 and num_classes is None:
            raise ValueError("mixup needs num_classes to build soft labels")

    @property
    def active(self) -> bool:
        return self.augmentation.active

    def state_dict(self) -> dict[str, Any]:
        """The generator's state: a checkpoint restores it to repeat the draws still to come."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the sequence of draws where :meth:`state_dict` left it."""
        self.generator.set_state(state["generator"])

    def _draw(self, n: int) -> torch.Tensor:
        """``(n, 8)`` uniforms in [0, 1): one generator call per batch."""
        import torch

        return torch.rand(n, 8, generator=self.generator, dtype=torch.float64)

    def sample(self, n: int, height: int, width: int, *, u: torch.Tensor | None = None) -> TransformParams:
        """Draw ``n`` transforms (Keras's ``random_transform`` distributions).

        Column ``k`` of ``u`` (default: a fresh :meth:`_draw`) drives one knob.
        """
        import numpy as np
        import torch

        a = self.augmentation
        draws: np.ndarray = (self._draw(n) if u is None else u).numpy()
        sym = draws[:, :6] * 2 - 1  # uniform in [-1, 1); NumPy: a few µs per batch
        no = np.zeros(n, dtype=bool)

        def t(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(values))

        return TransformParams(
            theta=t(sym[:, 0] * a.rotation_range),
            tx=t(sym[:, 1] * (a.height_shift_range * height)),
            ty=t(sym[:, 2] * (a.width_shift_range * width)),
            shear=t(sym[:, 3] * a.shear_range),
            zx=t(1.0 + sym[:, 4] * a.zoom_range),
            zy=t(1.0 + sym[:, 5] * a.zoom_range),
            flip_h=t(draws[:, 6] < 0.5 if a.horizontal_flip else no),
            flip_v=t(draws[:, 7] < 0.5 if a.vertical_flip else no),
        )

    def _cutout(self, images: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        import torch

        n, _, height, width = images.shape
        side_h = max(1, round(self.augmentation.cutout_size * height))
        side_w = max(1, round(self.augmentation.cutout_size * width))
        # Centre anywhere in the image; the square may be clipped by the border.
        cy = torch.randint(0, height, (n,), generator=self.generator).to(images.device)
        cx = torch.randint(0, width, (n,), generator=self.generator).to(images.device)
        rows = torch.arange(height, device=images.device).view(1, height, 1)
        cols = torch.arange(width, device=images.device).view(1, 1, width)
        top, left = (cy - side_h // 2).view(n, 1, 1), (cx - side_w // 2).view(n, 1, 1)
        box = (rows >= top) & (rows < top + side_h) & (cols >= left) & (cols < left + side_w)
        box = box & chosen.view(n, 1, 1)
        return images.masked_fill(box.unsqueeze(1), self.augmentation.cval)

    def augment_images(self, images: torch.Tensor) -> torch.Tensor:
        """The per-image part (affine, flips, cutout) of a batch, each image with ``augment_prob``."""
        import torch

        a = self.augmentation
        n, _, height, width = images.shape
        if n == 0 or a.augment_prob == 0 or not (a.geometric or a.cutout_size > 0):
            return images
        u = torch.rand(n, 9, generator=self.generator, dtype=torch.float64)
        chosen = u[:, 8] < a.augment_prob
        chosen_dev = chosen.to(images.device)
        out = images
        if a.geometric:
            params = self.sample(n, height, width, u=u[:, :8])
            warped = warp(images, params, fill_mode=a.fill_mode, cval=a.cval)
            # Images not chosen stay bit-identical (no resampling round-off).
            out = torch.where(chosen_dev.view(n, 1, 1, 1), warped, images) if a.augment_prob < 1 else warped
        if a.cutout_size > 0:
            out = self._cutout(out, chosen_dev)
        return out

    def mixup(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Blend the batch with a shuffled copy of itself; labels become soft targets."""
        import torch
        import torch.nn.functional as F

        lam = _beta(self.augmentation.mixup_alpha, self.generator)
        perm = torch.randperm(images.shape[0], generator=self.generator).to(images.device)
        if labels.is_floating_point():
            soft = labels
        else:
            soft = F.one_hot(labels, self.num_classes or int(labels.max()) + 1).float()
        return (
            lam * images + (1 - lam) * images[perm],
            lam * soft + (1 - lam) * soft[perm],
        )

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(batch)
        if not self.active:
            return out
        images = self.augment_images(out[self.key])
        if self.augmentation.mixup_alpha > 0 and "labels" in out:
            images, out["labels"] = self.mixup(images, out["labels"])
        out[self.key] = images
        return out


def _beta(alpha: float, generator: torch.Generator) -> float:
    """One Beta(α, α) draw from ``generator`` (inverse-CDF via SciPy: seeded, device-free)."""
    import torch
    from scipy.special import betaincinv

    u = float(torch.rand(1, generator=generator, dtype=torch.float64))
    return float(betaincinv(alpha, alpha, u))
