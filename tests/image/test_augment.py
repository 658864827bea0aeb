"""Batched Keras-style augmentation: exact geometry, fill modes, Keras parity, seeding.

Keras parity is checked against keras-preprocessing 1.1.2's own code (copied verbatim
below): its ``scipy.ndimage.affine_transform`` call, with ``mode=fill_mode``.
"""

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


# --- Keras, verbatim -------------------------------------------------------------------
# keras-preprocessing 1.1.2 (its last release; Keras 2's `keras.preprocessing.image` wraps it,
# e.g. keras-team/keras@00135a7 keras/preprocessing/image.py: `apply_affine_transform =
# image.apply_affine_transform`), keras_preprocessing/image/affine_transformations.py:
# lines 245-251 (transform_matrix_offset_center) and 283-336 (the body of
# apply_affine_transform after its argument checks). One edit: SciPy 1.17 deprecates the
# `ndimage.interpolation` alias, so `ndimage.affine_transform` (the same function) is called.
def transform_matrix_offset_center(matrix, x, y):
    o_x = float(x) / 2 + 0.5
    o_y = float(y) / 2 + 0.5
    offset_matrix = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset_matrix = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    transform_matrix = np.dot(np.dot(offset_matrix, matrix), reset_matrix)
    return transform_matrix


def apply_affine_transform(x, theta=0, tx=0, ty=0, shear=0, zx=1, zy=1,
                           row_axis=0, col_axis=1, channel_axis=2,
                           fill_mode='nearest', cval=0., order=1):
    from scipy import ndimage

    transform_matrix = None
    if theta != 0:
        theta = np.deg2rad(theta)
        rotation_matrix = np.array([[np.cos(theta), -np.sin(theta), 0],
                                    [np.sin(theta), np.cos(theta), 0],
                                    [0, 0, 1]])
        transform_matrix = rotation_matrix

    if tx != 0 or ty != 0:
        shift_matrix = np.array([[1, 0, tx],
                                 [0, 1, ty],
                                 [0, 0, 1]])
        if transform_matrix is None:
            transform_matrix = shift_matrix
        else:
            transform_matrix = np.dot(transform_matrix, shift_matrix)

    if shear != 0:
        shear = np.deg2rad(shear)
        shear_matrix = np.array([[1, -np.sin(shear), 0],
                                 [0, np.cos(shear), 0],
                                 [0, 0, 1]])
        if transform_matrix is None:
            transform_matrix = shear_matrix
        else:
            transform_matrix = np.dot(transform_matrix, shear_matrix)

    if zx != 1 or zy != 1:
        zoom_matrix = np.array([[zx, 0, 0],
                                [0, zy, 0],
                                [0, 0, 1]])
        if transform_matrix is None:
            transform_matrix = zoom_matrix
        else:
            transform_matrix = np.dot(transform_matrix, zoom_matrix)

    if transform_matrix is not None:
        h, w = x.shape[row_axis], x.shape[col_axis]
        transform_matrix = transform_matrix_offset_center(
            transform_matrix, h, w)
        x = np.rollaxis(x, channel_axis, 0)
        final_affine_matrix = transform_matrix[:2, :2]
        final_offset = transform_matrix[:2, 2]

        channel_images = [ndimage.affine_transform(
            x_channel,
            final_affine_matrix,
            final_offset,
            order=order,
            mode=fill_mode,
            cval=cval) for x_channel in x]
        x = np.stack(channel_images, axis=0)
        x = np.rollaxis(x, 0, channel_axis + 1)
    return x


def _keras_image_data_generator(img: np.ndarray, p: dict, fill_mode: str, cval: float) -> np.ndarray:
    """ImageDataGenerator(data_format="channels_first").apply_transform, its affine part and flips.

    keras_preprocessing/image/image_data_generator.py 1.1.2: channels_first gives image axes
    row 1, col 2, channel 0 (lines 307-310); apply_transform (lines 859-885) calls
    apply_affine_transform with fill_mode, cval and interpolation_order (default 1), then
    flips columns for flip_horizontal and rows for flip_vertical.
    """
    x = apply_affine_transform(img, p["theta"], p["tx"], p["ty"], p["shear"], p["zx"], p["zy"],
                               row_axis=1, col_axis=2, channel_axis=0,
                               fill_mode=fill_mode, cval=cval, order=1)
    if p["flip_horizontal"]:
        x = x[:, :, ::-1]
    if p["flip_vertical"]:
        x = x[:, ::-1, :]
    return x
# --- end of Keras ----------------------------------------------------------------------


def _keras_params(params: TransformParams, i: int, *, true_centre: bool) -> dict:
    """Image ``i``'s draw as Keras's transform_parameters.

    Keras 1.1.2 turns about (h/2 + 0.5, w/2 + 0.5), one pixel below and right of the
    image centre ((h - 1)/2, (w - 1)/2) that hpsearch (and later Keras) use. With
    ``true_centre`` the draw's shift is changed so that Keras's transform is ours:
    ``A (o - c - 1) + R t' + c + 1 = A (o - c) + R t`` gives ``t' = t + R^-1 (A - I) 1``.
    """
    p = {k: float(getattr(params, k)[i]) for k in ("theta", "tx", "ty", "shear", "zx", "zy")}
    if true_centre:
        th, sh = np.deg2rad(p["theta"]), np.deg2rad(p["shear"])
        rotation = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        a = rotation @ np.array([[1, -np.sin(sh)], [0, np.cos(sh)]]) @ np.diag([p["zx"], p["zy"]])
        p["tx"], p["ty"] = np.array([p["tx"], p["ty"]]) + np.linalg.solve(rotation, (a - np.eye(2)) @ np.ones(2))
    return {**p, "flip_horizontal": bool(params.flip_h[i]), "flip_vertical": bool(params.flip_v[i])}


@pytest.mark.parametrize("mode", ["nearest", "reflect", "constant"])
def test_random_draws_match_keras_scipy_call(mode: str) -> None:
    # Keras calls scipy with mode=fill_mode: "constant" here is scipy's "constant", not "grid-constant".
    x = torch.rand(6, 2, 9, 13, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    aug = Augmentation(
        rotation_range=40, width_shift_range=0.3, height_shift_range=0.3, shear_range=25,
        zoom_range=0.3, horizontal_flip=True, vertical_flip=True, fill_mode=mode, cval=0.4,
    )
    params = BatchAugmenter(aug, seed=5).sample(6, 9, 13)
    assert params.flip_h.any() and params.flip_v.any() and not params.flip_h.all()
    ours = warp(x, params, fill_mode=mode, cval=0.4).numpy()
    off_centre = []
    for i in range(6):
        keras = _keras_image_data_generator(x[i].numpy(), _keras_params(params, i, true_centre=True), mode, 0.4)
        np.testing.assert_allclose(ours[i], keras, rtol=0, atol=1e-12)
        raw = _keras_image_data_generator(x[i].numpy(), _keras_params(params, i, true_centre=False), mode, 0.4)
        off_centre.append(np.abs(ours[i] - raw).max())
    # The centre difference is real: the same draw fed to Keras unchanged gives other images.
    assert min(off_centre) > 1e-3
    if mode == "constant":
        assert (ours == 0.4).any() and ((ours != 0.4) & (ours != x.numpy())).any()


def test_constant_mode_is_scipy_constant_not_grid_constant() -> None:
    # A half-pixel width shift: the last column samples half a pixel beyond the image.
    x = torch.rand(1, 1, 4, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    out = warp(x, _params(1, ty=0.5), fill_mode="constant", cval=0.25)
    # scipy mode="constant" (what Keras asks for): beyond the outermost pixel centre is cval ...
    torch.testing.assert_close(out[..., -1], torch.full_like(out[..., -1], 0.25), atol=0, rtol=0)
    # ... and inside it interpolates image pixels only.
    torch.testing.assert_close(out[..., :-1], (x[..., :-1] + x[..., 1:]) / 2, atol=1e-12, rtol=0)
    # scipy's "grid-constant" (the old behaviour) would blend the edge with cval instead.
    from scipy import ndimage

    grid_constant = ndimage.shift(x[0, 0].numpy(), (0, -0.5), order=1, mode="grid-constant", cval=0.25)
    assert not np.allclose(grid_constant[:, -1], 0.25)
    constant = ndimage.shift(x[0, 0].numpy(), (0, -0.5), order=1, mode="constant", cval=0.25)
    np.testing.assert_allclose(out[0, 0].numpy(), constant, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_mode_keeps_edges_of_exact_moves(dtype: torch.dtype) -> None:
    # Source points exactly on the edge count as inside whatever the grid's round-off.
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7)).to(dtype)
    cases = [
        (_params(2, flip_h=True), torch.flip(x, [-1])),
        (_params(2, flip_v=True), torch.flip(x, [-2])),
        (_params(2, theta=90.0), torch.rot90(x, -1, (-2, -1))),
        (_params(2, theta=-90.0), torch.rot90(x, 1, (-2, -1))),
        (_params(2, theta=180.0), torch.rot90(x, 2, (-2, -1))),
    ]
    for params, expected in cases:
        out = warp(x, params, fill_mode="constant", cval=-1.0)
        assert not (out == -1.0).any()
        torch.testing.assert_close(out, expected, atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=0)


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
