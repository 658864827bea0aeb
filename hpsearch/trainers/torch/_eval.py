"""One evaluation pass: loss, accuracy, macro F1 and the confusion matrix."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpsearch.trainers.torch._devices import autocast, to_device

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["EvalResult", "Forward", "default_forward", "evaluate"]

#: ``forward(model, inputs) -> logits``: how a task calls its model on a batch (labels removed).
Forward = Callable[["nn.Module", Mapping[str, "torch.Tensor"]], "torch.Tensor"]


def default_forward(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``model(**inputs)``, unwrapping a ``.logits`` attribute (Hugging Face outputs)."""
    out = model(**inputs)
    return getattr(out, "logits", out)


@dataclass
class EvalResult:
    """Metrics of one evaluation pass (``val_loss`` is plain cross-entropy, no smoothing)."""

    val_loss: float
    accuracy: float
    f1_macro: float
    confusion: list[list[int]]
    n: int

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Scalar metrics, keys optionally prefixed (``test_``); val loss becomes ``<prefix>loss``."""
        loss_key = f"{prefix}loss" if prefix else "val_loss"
        return {
            loss_key: self.val_loss,
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}f1_macro": self.f1_macro,
        }

    @staticmethod
    def from_predictions(loss_sum: float, y_pred: Any, y_true: Any, num_classes: int) -> EvalResult:
        """The result of predictions ``y_pred`` against ``y_true`` (empty: all zero)."""
        from sklearn.metrics import confusion_matrix, f1_score

        n = len(y_true)
        if not n:
            return EvalResult(val_loss=loss_sum, accuracy=0.0, f1_macro=0.0, confusion=[], n=0)
        classes = list(range(num_classes))
        f1 = f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)
        return EvalResult(
            val_loss=loss_sum / n,
            accuracy=float((y_pred == y_true).mean()),
            f1_macro=float(f1),
            confusion=confusion_matrix(y_true, y_pred, labels=classes).tolist(),
            n=n,
        )


def _predict(
    model: nn.Module, loader: Any, device: torch.device, forward: Forward
) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
    """Summed cross-entropy, predicted and gold labels over ``loader`` (inference mode)."""
    import torch
    import torch.nn.functional as F

    loss_sum, preds, golds = 0.0, [], []
    with torch.inference_mode():
        for batch in loader:
            batch = to_device(batch, device)
            labels = batch.pop("labels")
            with autocast(device):
                logits = forward(model, batch)
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
            preds.append(logits.argmax(-1).cpu())
            golds.append(labels.cpu())
    return loss_sum, preds, golds


def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    collate_fn: Callable[[list[Any]], dict[str, torch.Tensor]],
    num_classes: int,
    batch_size: int = 64,
    device: torch.device | None = None,
    forward: Forward = default_forward,
) -> EvalResult:
    """Loss, accuracy, macro F1 and confusion matrix of ``model`` on ``dataset``.

    The model's train/eval mode is restored afterwards.
    """
    import torch
    from torch.utils.data import DataLoader

    device = device or next(model.parameters()).device
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    loss_sum, preds, golds = _predict(model, loader, device, forward)
    model.train(was_training)
    y_pred: Any = torch.cat(preds).numpy() if preds else []
    y_true: Any = torch.cat(golds).numpy() if golds else []
    return EvalResult.from_predictions(loss_sum, y_pred, y_true, num_classes)
