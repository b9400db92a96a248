"""Accuracy of a detector bundle on labelled data: AUC, rates at the calibrated threshold, ROC, image grids.

Runtime-side (OpenVINO + FAISS through `ovdoc.runtime.detector.Detector`): no TensorFlow, so a board can
evaluate the bundle it will run.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ovdoc.errors import OvdocError


@dataclass
class EvalResult:
    normal_scores: np.ndarray
    anomalous_scores: np.ndarray
    threshold: float

    def metrics(self) -> dict:
        from sklearn.metrics import roc_auc_score

        y, s = self.labels_scores()
        fpr = float(np.mean(self.normal_scores > self.threshold))
        tpr = float(np.mean(self.anomalous_scores > self.threshold))
        return {
            "auc": float(roc_auc_score(y, s)),
            "threshold": self.threshold,
            "tpr_at_threshold": tpr,
            "fpr_at_threshold": fpr,
            "tpr_at_fpr_1pct": tpr_at_fpr(self.normal_scores, self.anomalous_scores, 0.01),
            "n_normal": int(len(self.normal_scores)),
            "n_anomalous": int(len(self.anomalous_scores)),
        }

    def labels_scores(self) -> tuple[np.ndarray, np.ndarray]:
        y = np.r_[np.zeros(len(self.normal_scores)), np.ones(len(self.anomalous_scores))]
        return y, np.r_[self.normal_scores, self.anomalous_scores]


def tpr_at_fpr(normal: np.ndarray, anomalous: np.ndarray, fpr: float) -> float:
    """Share of anomalies flagged by the threshold that flags `fpr` of the normal test images."""
    threshold = np.quantile(normal, 1.0 - fpr, method="higher")
    return float(np.mean(anomalous > threshold))


def auc(normal_scores: np.ndarray, anomalous_scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(normal_scores)), np.ones(len(anomalous_scores))]
    return float(roc_auc_score(y, np.r_[normal_scores, anomalous_scores]))


def evaluate_detector(detector, normal: list | np.ndarray, anomalous: list | np.ndarray) -> EvalResult:
    if len(normal) == 0 or len(anomalous) == 0:
        raise OvdocError("evaluation needs at least one normal and one anomalous image")
    return EvalResult(
        np.asarray(detector.score_samples(list(normal)), np.float64),
        np.asarray(detector.score_samples(list(anomalous)), np.float64),
        float(detector.threshold_),
    )


def plot_roc(result: EvalResult, path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    y, s = result.labels_scores()
    fpr, tpr, _ = roc_curve(y, s)
    m = result.metrics()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, lw=1.5, label=f"AUC {m['auc']:.4f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.plot([m["fpr_at_threshold"]], [m["tpr_at_threshold"]], "ro", label="bundle threshold")
    ax.set_xlabel("false-positive rate (normal flagged)")
    ax.set_ylabel("true-positive rate (anomaly flagged)")
    ax.set_title(title or "ROC")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def image_grid(images: list, scores: np.ndarray, path, *, n: int = 8, tile: int = 96) -> None:
    """Two rows: the `n` most anomalous anomalies (top) and the `n` least anomalous (bottom), with scores."""
    order = np.argsort(scores)
    rows = [order[::-1][:n], order[:n]]
    canvas = np.full((2 * (tile + 18), n * tile, 3), 255, np.uint8)
    for r, idx in enumerate(rows):
        for c, i in enumerate(idx):
            img = images[i]
            if img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            y0 = r * (tile + 18)
            canvas[y0 : y0 + tile, c * tile : (c + 1) * tile] = cv2.resize(
                img, (tile, tile), interpolation=cv2.INTER_AREA
            )
            cv2.putText(
                canvas,
                f"{scores[i]:.3g}",
                (c * tile + 3, y0 + tile + 13),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
    if not cv2.imwrite(str(path), canvas):
        raise OvdocError(f"cannot write {path}")
