"""The frozen-defaults rule for a lever study (benchmarks/results/frozen-defaults-2026-12-07.md): a
candidate beats the default only by more than 2 std of one seed of the default, at least 0.01 image AUROC.
One place, so every lever study decides the same way."""

from __future__ import annotations


def against_default(name: str, row: dict, default: dict, *, wins: str, loses: str,
                    baseline: str = "the default") -> dict:
    """`row` and `default` are {"per_seed": [{"image_auroc": ...}, ...], "mean_std": {"image_auroc":
    (mean, std)}}: the decision, the margin, the per-seed deltas and the record's line."""
    base, sd = default["mean_std"]["image_auroc"]
    margin = round(max(2 * sd, 0.01), 4)
    delta = round(row["mean_std"]["image_auroc"][0] - base, 4)
    paired = [round(r["image_auroc"] - d["image_auroc"], 4)
              for r, d in zip(row["per_seed"], default["per_seed"], strict=True)]
    verdict = wins if delta > margin else loses
    return {"delta": delta, "margin": margin, "verdict": verdict, "paired_per_seed": paired,
            "line": f"{name}: {delta:+.4f} image AUROC against {baseline} (per seed "
                    f"{' / '.join(f'{v:+.4f}' for v in paired)}), margin {margin:.4f} (2 std of one seed, "
                    f"at least 0.01): {verdict}"}
