"""Batched Keras-style augmentation: exact geometry, fill modes, Keras parity, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from hpsearch.data._augment import (
    AUGMENTATION_KNOBS,
    AUGMENTATION_PRESETS,
    Augmentation,
    AugmentationPreset,
    BatchAugmenter,
    FillMode,
    TransformParams,
    warp,
)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _params(n: int, **values: float | bool) -> TransformParams:
    params = TransformParams.identity(n)
    for name, value in values.items():
        getattr(params, name)[:] = value
    return params


def test_knob_names_are_keras_and_the_seed_preset_is_the_seed() -> None:
    keras = {
        "rotation_range",
        "width_shift_range",
        "height_shift_range",
        "shear_range",
        "zoom_range",
        "horizontal_flip",
        "vertical_flip",
        "fill_mode",
        "cval",
    }
    assert keras | {"augment_prob", "mixup_alpha", "cutout_size"} == AUGMENTATION_KNOBS
    seed = Augmentation.model_validate(AUGMENTATION_PRESETS[AugmentationPreset.KERAS_SEED])
    assert (seed.rotation_range, seed.width_shift_range, seed.height_shift_range) == (20, 0.2, 0.2)
    assert (seed.shear_range, seed.zoom_range, seed.horizontal_flip) == (0.2, 0.2, True)
    assert seed.fill_mode is FillMode.NEAREST and not seed.vertical_flip
    assert not Augmentation().active and not Augmentation.model_validate(
        AUGMENTATION_PRESETS[AugmentationPreset.NONE]
    ).active
    with pytest.raises(ValidationError):
        Augmentation(fill_mode="wrap")
    with pytest.raises(ValidationError):
        Augmentation(width_shift_range=1.5)


def test_all_ranges_zero_is_the_identity(images: torch.Tensor) -> None:
    # Through the resampler with identity draws: exact up to float64 round-off.
    out = warp(images, TransformParams.identity(4))
    torch.testing.assert_close(out, images, atol=1e-12, rtol=0)
    # Through the augmenter: an inactive augmenter hands the very same tensor back.
    batch = {"pixel_values": images, "labels": torch.arange(4)}
    assert BatchAugmenter(Augmentation())(batch)["pixel_values"] is images
    # augment_prob 0 with every knob on: bit-identical.
    off = Augmentation(rotation_range=30, zoom_range=0.3, horizontal_flip=True, augment_prob=0.0)
    assert torch.equal(BatchAugmenter(off)(batch)["pixel_values"], images)


def test_flips_equal_torch_flip(images: torch.Tensor) -> None:
    torch.testing.assert_close(
        warp(images, _params(4, flip_h=True)), torch.flip(images, [-1]), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        warp(images, _params(4, flip_v=True)), torch.flip(images, [-2]), atol=1e-12, rtol=0
    )


def test_rotation_by_90_degrees_equals_rot90(images: torch.Tensor) -> None:
    # Keras's rotation matrix: +90 turns the content clockwise on screen.
    torch.testing.assert_close(
        warp(images, _params(4, theta=90.0)), torch.rot90(images, -1, (-2, -1)), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        warp(images, _params(4, theta=-90.0)), torch.rot90(images, 1, (-2, -1)), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        warp(images, _params(4, theta=180.0)), torch.rot90(images, 2, (-2, -1)), atol=1e-12, rtol=0
    )


def test_one_pixel_shift_moves_the_interior_by_one_pixel() -> None:
    x = torch.rand(2, 1, 7, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # Keras: ty (width shift) +1 pixel samples column c + 1 (content moves left).
    out = warp(x, _params(2, ty=1.0))
    torch.testing.assert_close(out[..., :-1], x[..., 1:], atol=1e-12, rtol=0)
    out = warp(x, _params(2, ty=-1.0))
    torch.testing.assert_close(out[..., 1:], x[..., :-1], atol=1e-12, rtol=0)
    out = warp(x, _params(2, tx=1.0))  # height shift: rows
    torch.testing.assert_close(out[..., :-1, :], x[..., 1:, :], atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("mode", "border"),
    [
        ("nearest", lambda x: x[..., -1:].expand(-1, -1, -1, 2)),  # aaa|abcd|ddd
        ("reflect", lambda x: x[..., [-1, -2]]),  # dcba|abcd|dcba
        ("constant", lambda x: torch.full_like(x[..., :2], 0.25)),  # cval
    ],
)
def test_fill_modes_give_their_documented_border(mode: str, border) -> None:
    x = torch.rand(2, 2, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = warp(x, _params(2, ty=2.0), fill_mode=mode, cval=0.25)
    torch.testing.assert_close(out[..., :-2], x[..., 2:], atol=1e-12, rtol=0)
    torch.testing.assert_close(out[..., -2:], border(x), atol=1e-12, rtol=0)


def _keras_apply_affine_transform(
    img: np.ndarray, theta, tx, ty, shear, zx, zy, mode: str, cval: float
) -> np.ndarray:
    """Keras 2's ``apply_affine_transform`` (channels first), verbatim in its maths."""
    from scipy import ndimage

    th, sh = np.deg2rad(theta), np.deg2rad(shear)
    rotation = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shear_m = np.array([[1, -np.sin(sh), 0], [0, np.cos(sh), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    matrix = rotation @ shift @ shear_m @ zoom
    h, w = img.shape[-2:]
    o_x, o_y = h / 2 - 0.5, w / 2 - 0.5
    offset = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    matrix = offset @ matrix @ reset
    return np.stack(
        [
            ndimage.affine_transform(c, matrix[:2, :2], matrix[:2, 2], order=1, mode=mode, cval=cval)
            for c in img
        ]
    )


# scipy's "grid-constant" is the bilinear-with-cval border our constant mode documents.
@pytest.mark.parametrize(("mode", "scipy_mode"), [("nearest", "nearest"), ("reflect", "reflect"), ("constant", "grid-constant")])
def test_random_draws_match_keras_per_image_path(mode: str, scipy_mode: str) -> None:
    x = torch.rand(6, 2, 9, 13, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    aug = Augmentation(
        rotation_range=40, width_shift_range=0.3, height_shift_range=0.3, shear_range=25,
        zoom_range=0.3, horizontal_flip=True, vertical_flip=True, fill_mode=mode, cval=0.4,
    )
    params = BatchAugmenter(aug, seed=5).sample(6, 9, 13)
    ours = warp(x, params, fill_mode=mode, cval=0.4).numpy()
    for i in range(6):
        ref = _keras_apply_affine_transform(
            x[i].numpy(), float(params.theta[i]), float(params.tx[i]), float(params.ty[i]),
            float(params.shear[i]), float(params.zx[i]), float(params.zy[i]), scipy_mode, 0.4,
        )
        # Keras flips after the affine transform.
        if params.flip_h[i]:
            ref = ref[..., ::-1]
        if params.flip_v[i]:
            ref = ref[..., ::-1, :]
        np.testing.assert_allclose(ours[i], ref, atol=1e-9)


def test_draws_follow_keras_distributions() -> None:
    aug = Augmentation(
        rotation_range=20, width_shift_range=0.2, height_shift_range=0.1, shear_range=5,
        zoom_range=0.2, horizontal_flip=True,
    )
    p = BatchAugmenter(aug, seed=0).sample(4000, 10, 20)
    assert p.theta.abs().max() <= 20 and p.theta.abs().max() > 19
    assert p.ty.abs().max() <= 0.2 * 20 and p.tx.abs().max() <= 0.1 * 10
    assert p.shear.abs().max() <= 5
    assert 0.8 <= p.zx.min() and p.zy.max() <= 1.2 and not torch.equal(p.zx, p.zy)
    assert 0.45 < p.flip_h.double().mean() < 0.55 and not p.flip_v.any()


def test_draws_are_seeded_and_reproducible(images: torch.Tensor) -> None:
    aug = Augmentation.model_validate(
        {**AUGMENTATION_PRESETS[AugmentationPreset.KERAS_SEED], "cutout_size": 0.25, "mixup_alpha": 0.4}
    )
    batch = {"pixel_values": images.float(), "labels": torch.tensor([0, 1, 2, 1])}

    def run(seed: int) -> list[dict[str, torch.Tensor]]:
        augmenter = BatchAugmenter(aug, num_classes=3, seed=seed)
        return [augmenter(batch) for _ in range(3)]

    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first, again):
        assert torch.equal(a["pixel_values"], b["pixel_values"])
        assert torch.equal(a["labels"], b["labels"])
    assert not torch.equal(first[0]["pixel_values"], other[0]["pixel_values"])
    assert not torch.equal(first[0]["pixel_values"], first[1]["pixel_values"])  # the stream moves on
    assert torch.equal(batch["pixel_values"], images.float())  # the input is not modified


def test_augment_prob_chooses_images_and_leaves_the_rest_untouched() -> None:
    x = torch.rand(400, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    out = BatchAugmenter(Augmentation(rotation_range=30, augment_prob=0.3), seed=1).augment_images(x)
    same = (out == x).flatten(1).all(1)
    assert 0.6 < same.double().mean() < 0.8


def test_mixup_soft_labels_and_cutout() -> None:
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(5)) + 1.0
    labels = torch.arange(8) % 4
    out = BatchAugmenter(Augmentation(mixup_alpha=0.4), num_classes=4, seed=0)(
        {"pixel_values": x, "labels": labels}
    )
    assert out["labels"].shape == (8, 4)
    torch.testing.assert_close(out["labels"].sum(1), torch.ones(8))
    loss = torch.nn.functional.cross_entropy(torch.zeros(8, 4), out["labels"])  # soft targets work
    assert torch.isfinite(loss)
    cut = BatchAugmenter(Augmentation(cutout_size=0.25, cval=0.0), seed=0).augment_images(x)
    holes = (cut == 0).flatten(1).sum(1)
    assert ((holes >= 1) & (holes <= 4)).all()  # a 2x2 square, maybe clipped by the border
    with pytest.raises(ValueError, match="num_classes"):
        BatchAugmenter(Augmentation(mixup_alpha=0.2))
