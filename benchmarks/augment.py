"""Image augmentation throughput and its training-step overhead (issue 4).

Throughput (images/s) of the seed article's ImageDataGenerator settings
(rotation 20, shifts 0.2, shear 0.2, zoom 0.2, horizontal flip, fill
nearest), on 8x8x1 digits and on 32x32x3 (CIFAR-sized) random images, by

  batched     hpsearch's BatchAugmenter: one affine_grid/grid_sample per batch, on the device
  per-sample  the same draws and maths, one image per call (the reference, same run)
  keras       Keras's own per-image path: scipy.ndimage.affine_transform per channel,
              order 1 (what ImageDataGenerator.apply_transform calls), CPU only

and the training-step overhead of that augmentation on digits: the real
``train_loop`` (CNN width 16, depth 2, batch 64, AdamW), ``time_train``
(evaluation excluded) with and without the augmenter, runs alternated,
fastest of ``--repeats`` each, plus the time to augment one batch of 64 alone
(its share of a step is the overhead without the noise of two training runs).
Target: overhead <= 15%.

Usage::

    .venv/bin/python benchmarks/augment.py [--device cpu|cuda] [--json out.json]
    .venv/bin/python benchmarks/augment.py --write-readme [--merge gpu.json]

``--merge`` adds rows measured elsewhere (e.g. on a GPU machine, written there
with ``--json``) to the README table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
START, END = "<!-- augment:start -->", "<!-- augment:end -->"
sys.path.insert(0, str(HERE.parent))

from hpsearch.data._augment import (  # noqa: E402
    AUGMENTATION_PRESETS,
    Augmentation,
    AugmentationPreset,
    BatchAugmenter,
    TransformParams,
    warp,
)

SEED = Augmentation.model_validate(AUGMENTATION_PRESETS[AugmentationPreset.KERAS_SEED])
#: Seconds each rate is measured over (``--min-s``; the GPU script's quick mode shortens it).
MIN_S = 1.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(fn: Any, images: int, device: torch.device, min_s: float | None = None) -> float:
    """Images per second of ``fn()`` (which augments ``images`` images), after a warm-up."""
    min_s = MIN_S if min_s is None else min_s
    fn()
    _sync(device)
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        _sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s:
            return calls * images / elapsed


def _keras_one(img: np.ndarray, p: TransformParams, i: int) -> np.ndarray:
    """Keras 2's apply_affine_transform + flip for one channels-first image."""
    from scipy import ndimage

    th, sh = np.deg2rad(float(p.theta[i])), np.deg2rad(float(p.shear[i]))
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    shift = np.array([[1, 0, float(p.tx[i])], [0, 1, float(p.ty[i])], [0, 0, 1]])
    shear = np.array([[1, -np.sin(sh), 0], [0, np.cos(sh), 0], [0, 0, 1]])
    zoom = np.diag([float(p.zx[i]), float(p.zy[i]), 1.0])
    m = rot @ shift @ shear @ zoom
    h, w = img.shape[-2:]
    ox, oy = h / 2 - 0.5, w / 2 - 0.5
    m = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]]) @ m @ np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]])
    out = np.stack(
        [ndimage.affine_transform(c, m[:2, :2], m[:2, 2], order=1, mode="nearest") for c in img]
    )
    return out[..., ::-1] if bool(p.flip_h[i]) else out


def throughput(device: torch.device, shape: tuple[int, int, int], batch: int) -> dict[str, Any]:
    c, h, w = shape
    x = torch.rand(batch, c, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    augmenter = BatchAugmenter(SEED, seed=0)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    batched = _rate(lambda: augmenter({"pixel_values": x, "labels": labels}), batch, device)

    n_ref = min(batch, 128)
    params = augmenter.sample(n_ref, h, w)
    singles = [
        TransformParams(*(getattr(params, f)[i : i + 1] for f in params.__dataclass_fields__))
        for i in range(n_ref)
    ]

    def per_sample() -> None:
        for i in range(n_ref):
            warp(x[i : i + 1], singles[i], fill_mode=SEED.fill_mode)

    reference = _rate(per_sample, n_ref, device)
    row: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "shape": f"{h}x{w}x{c}",
        "batch": batch,
        "batched": batched,
        "per_sample": reference,
    }
    if device.type == "cpu":
        xs = x.cpu().numpy()
        row["keras"] = _rate(lambda: [_keras_one(xs[i], params, i) for i in range(n_ref)], n_ref, device)
    return row


def step_overhead(device: torch.device, repeats: int, epochs: int) -> dict[str, Any]:
    from hpsearch.trainers import RecordingChannel, TrialContext, TrialResources
    from hpsearch.trainers._image import (
        ImageClassificationSettings,
        ImageClassificationTrainer,
        _collate,
        _image_forward,
        _ImageDataset,
        build_model,
    )
    from hpsearch.trainers.torch._loop import train_loop

    settings = ImageClassificationSettings(epochs=epochs, batch_size=64, sample_grid=0, save_model=False)
    trainer = ImageClassificationTrainer(settings, study_dir=HERE, objective="accuracy")
    splits = trainer._load(settings)
    config = trainer.saved_config(settings, splits)
    train, val = _ImageDataset(splits.train), _ImageDataset(splits.val.subset(slice(0, 64)))
    times: dict[str, list[float]] = {"off": [], "on": []}
    steps = 0
    for _ in range(repeats):
        for mode in ("off", "on"):
            torch.manual_seed(0)
            model = build_model(config, base_dir=HERE)
            ctx = TrialContext(
                trial_number=0, params={}, resources=TrialResources(cpus=torch.get_num_threads()),
                channel=RecordingChannel(), objective="accuracy",
            )
            augmenter = BatchAugmenter(SEED, num_classes=10, seed=0) if mode == "on" else None
            result = train_loop(
                model, train, val, settings, ctx, num_classes=10, train_collate=_collate,
                eval_collate=_collate, forward=_image_forward, device=device,
                train_transform=augmenter,
            )
            times[mode].append(result.time_train)
            steps = result.steps
    # Contention from other processes only ever adds time: the fastest run is the cleanest.
    off, on = min(times["off"]), min(times["on"])
    x = train.images[:64].to(device)
    augmenter = BatchAugmenter(SEED, num_classes=10, seed=0)
    batch = {"pixel_values": x, "labels": train.labels[:64].to(device)}
    aug_ms = 1000 * 64 / max(_rate(lambda: augmenter(batch), 64, device) for _ in range(3))
    return {
        "aug_ms": aug_ms,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "steps": steps,
        "off_ms": off / steps * 1000,
        "on_ms": on / steps * 1000,
        "overhead": on / off - 1,
        "repeats": repeats,
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| device | images | batch | batched img/s | per-sample img/s | Keras/scipy img/s | batched / per-sample | batched / Keras |",
        "|---|---|---|---|---|---|---|---|",
    ]
    steps = [
        "| device | steps | ms/step, no augmentation | ms/step, seed augmentation | overhead | augmenting one batch of 64, ms | its share of a step |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for r in res["throughput"]:
            keras = r.get("keras")
            keras_rate = f"{keras:,.0f}" if keras else "-"
            vs_keras = f"{r['batched'] / keras:.0f}×" if keras else "-"
            rows.append(
                f"| {r['device']} | {r['shape']} | {r['batch']} | {r['batched']:,.0f} | {r['per_sample']:,.0f} | "
                f"{keras_rate} | {r['batched'] / r['per_sample']:.0f}× | {vs_keras} |"
            )
        s = res["step"]
        steps.append(
            f"| {s['device']} | {s['steps']} | {s['off_ms']:.2f} | {s['on_ms']:.2f} | {s['overhead'] * 100:+.1f}% | "
            f"{s['aug_ms']:.3f} | {s['aug_ms'] / s['off_ms'] * 100:.1f}% |"
        )
    return "\n".join(rows + [""] + steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--min-s", type=float, default=1.0, help="seconds per throughput measurement")
    ap.add_argument("--json", type=Path, help="Also write the results here.")
    ap.add_argument("--merge", type=Path, action="append", default=[], help="Results JSON from another machine.")
    ap.add_argument("--write-readme", action="store_true")
    args = ap.parse_args()

    global MIN_S
    MIN_S = args.min_s
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "throughput": [throughput(device, shape, args.batch) for shape in ((1, 8, 8), (3, 32, 32))],
        "step": step_overhead(device, args.repeats, args.epochs),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    results = [result] + [json.loads(p.read_text()) for p in args.merge]
    block = "\n".join(
        [
            f"Command: `python benchmarks/augment.py {' '.join(sys.argv[1:])}` ({result['date']})  ",
            *(f"Machine: {r['machine']}  " for r in results),
            "",
            table(results),
        ]
    )
    print(block)
    if args.write_readme:
        from _readme import replace_block

        replace_block(START, END, block, README)
        print(f"\nwrote {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
