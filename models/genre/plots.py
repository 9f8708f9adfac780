"""PNG plots of the genre model: training curves and the confusion matrix (matplotlib, Agg)."""
from __future__ import annotations

from typing import Mapping, Sequence

from musicrec.atomic import write_atomic


def _save_png(figure, path: str) -> None:
    write_atomic(path, lambda tmp_path: figure.savefig(tmp_path, format="png", dpi=100,
                                                       bbox_inches="tight"), suffix=".png")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede importing pyplot
    import matplotlib.pyplot as plt

    return plt


def save_training_curves(history: Mapping[str, Sequence[float]], path: str,
                         best_epoch: int | None = None) -> None:
    """Loss and accuracy per epoch (training and validation), one panel each, as a PNG.

    Args:
        history: Keras ``History.history``: metric name -> one value per epoch.
        path: the PNG to write (atomically).
        best_epoch: 1-based epoch whose weights were kept; marked when given.
    """
    plt = _pyplot()
    panels = [("loss", [n for n in history if n.endswith("loss")]),
              ("accuracy", [n for n in history if n.endswith("accuracy")])]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for axis, (title, names) in zip(axes, panels):
        for name in sorted(names):
            axis.plot(range(1, len(history[name]) + 1), history[name], marker=".", label=name)
        if best_epoch:
            axis.axvline(best_epoch, color="grey", linestyle=":", label="best epoch")
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.legend(fontsize="small")
    try:
        _save_png(figure, path)
    finally:
        plt.close(figure)


def save_confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str,
                          title: str = "track-level confusion matrix") -> None:
    """Counts ``[n_labels][n_labels]`` (rows true, columns predicted) as an annotated PNG heat map."""
    plt = _pyplot()
    size = max(4.0, 0.6 * len(labels) + 2.0)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    peak = max((max(row) for row in matrix), default=0)
    for row, counts in enumerate(matrix):
        for column, count in enumerate(counts):
            axis.text(column, row, str(count), ha="center", va="center",
                      color="white" if peak and count > peak / 2 else "black")
    try:
        _save_png(figure, path)
    finally:
        plt.close(figure)


__all__ = ["save_training_curves", "save_confusion_matrix"]
