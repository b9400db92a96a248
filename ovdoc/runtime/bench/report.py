"""Benchmark results as a terminal table, a Markdown file, JSON and PNG charts.

Charts use matplotlib's Agg backend (no display on a board), imported only when charts are written.
"""

from __future__ import annotations

import json
from pathlib import Path

from ovdoc.atomic import atomic_path, write_text_atomic
from ovdoc.runtime.bench.machine import summary_line

COLUMNS = [
    ("device", "device", "{}"),
    ("precision", "prec", "{}"),
    ("batch", "batch", "{}"),
    ("hint", "hint", "{}"),
    ("scorer", "scorer", "{}"),
    ("model_ips", "model img/s", "{:.1f}"),
    ("latency_ms_p50", "lat p50 ms", "{:.2f}"),
    ("latency_ms_p99", "lat p99 ms", "{:.2f}"),
    ("scorer_us", "score µs", "{:.0f}"),  # per query (global) or per frame (patch: every patch of it)
    ("pipeline_fps", "pipeline FPS", "{:.1f}"),
    ("fraction_of_ceiling", "of ceiling", "{:.0%}"),
    ("auc", "AUC", "{:.4f}"),
    ("first_result_s_cold", "1st cold s", "{:.2f}"),
    ("first_result_s_warm", "1st warm s", "{:.2f}"),
    ("rss_mb", "RSS MB", "{:.0f}"),
]


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if key == "scorer_us":
        value = row.get("scorer_us_per_query", row.get("scorer_us_per_frame"))
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _rows(result: dict) -> tuple[list[str], list[list[str]]]:
    header = [title for _, title, _ in COLUMNS]
    body = []
    for row in result["results"]:
        if "error" in row and row.get("model_ips") is None:
            cells = [_cell(row, key, fmt) for key, _, fmt in COLUMNS[:5]]
            body.append(cells + [f"FAILED: {row['error']}"] + [""] * (len(COLUMNS) - 6))
        else:
            body.append([_cell(row, key, fmt) for key, _, fmt in COLUMNS])
    return header, body


def _footer(result: dict) -> list[str]:
    cfg = result["config"]
    lines = [
        f"decode + resize ceiling: {result['ceiling']['decode_fps']} FPS "
        f"({cfg['frames']} frames at {cfg['res']} from {cfg['source']})"
    ]
    for s in result.get("skipped", []):
        what = s.get("device") or s.get("precision")
        lines.append(f"skipped {what}: {s['reason']}")
    q = result.get("int8")
    if q:
        if q.get("accuracy_verified"):
            sel = cfg.get("int8_selection_images") or ["?", "?"]
            lines.append(
                f"INT8: accepted on {sel[0]}+{sel[1]} eval images: AUC {q['auc_fp32']:.4f} (FP32) -> "
                f"{q['auc_int8']:.4f} (drop {q['auc_drop']:+.4f}, bound {q['max_auc_drop']}); the table's "
                f"AUCs are on the other {cfg['eval_normal']}+{cfg['eval_anomalous']}; cosine to FP32 min "
                f"{q['cosine_to_fp32_min']:.3f} median {q['cosine_to_fp32_median']:.3f}, {q['seconds']} s "
                "to quantize"
            )
        else:
            lines.append(
                f"INT8: {q.get('warning')}; cosine to FP32 min {q['cosine_to_fp32_min']:.3f} "
                f"median {q['cosine_to_fp32_median']:.3f}"
            )
    b = result.get("baselines") or {}
    for label, fps_key, sp_key, skip_key in (
        (
            "original app (Keras predict_on_batch per frame + LOF)",
            "original_app_fps",
            "speedup_vs_original_app",
            "original_app_skipped",
        ),
        (
            "OpenVINO 2019 port (sync per frame + LOF)",
            "openvino_2019_fps",
            "speedup_vs_openvino_2019",
            "openvino_2019_skipped",
        ),
    ):
        if b.get(fps_key):
            sp = f", ovdoc (CPU FP32 LOF, like with like) is {b[sp_key]}x faster" if b.get(sp_key) else ""
            best = b.get("best_" + sp_key)
            sp += f"; best configuration {best}x" if best else ""
            lines.append(f"baseline {label}: {b[fps_key]} FPS{sp}")
        elif b.get(skip_key):
            lines.append(f"baseline {label}: skipped: {b[skip_key]}")
    if b.get("like_note"):
        lines.append(f"baselines: {b['like_note']}")
    if b.get("note"):
        lines.append(f"baselines: {b['note']}")
    m = result.get("machine", {})
    if m.get("load_average_1m") is not None:
        loads = [v for v in (m.get("load_average_1m_at_start"), m["load_average_1m"]) if v is not None]
        busy = max(loads) > (m.get("usable_cores") or 1)
        lines.append(
            f"load average (1 min) at start {loads[0]}, at end {loads[-1]} on {m.get('usable_cores')} cores"
            + (": other work shared the CPU, so timings are pessimistic and noisy" if busy else "")
        )
    lines.extend(f"note: {n}" for n in result.get("notes", []))
    return lines


def terminal_table(result: dict) -> str:
    header, body = _rows(result)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [summary_line(result["machine"]), fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in body]
    return "\n".join(lines + [""] + _footer(result))


def markdown(result: dict) -> str:
    header, body = _rows(result)
    m = result["machine"]
    lines = [
        f"# ovdoc bench: {Path(result['bundle']).name}",
        "",
        f"Machine: {summary_line(m)} ({m.get('distro', '')}, Python {m.get('python')})",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    lines += [""] + [f"- {line}" for line in _footer(result)] + [""]
    return "\n".join(lines)


def write_outputs(result: dict, out_dir: str | Path, stem: str = "bench") -> list[Path]:
    """`<stem>.json`, `<stem>.md`, `<stem>-fps.png`, `<stem>-accuracy.png` (when AUCs exist), atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{stem}.json", out / f"{stem}.md"]
    write_text_atomic(written[0], json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    write_text_atomic(written[1], markdown(result))
    written += charts(result, out, stem)
    return written


def charts(result: dict, out: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["results"] if r.get("pipeline_fps") or r.get("model_ips")]
    if not rows:
        return []
    written = []
    # FPS by device/precision/batch (best hint and scorer per group)
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r["device"], r["precision"], r["batch"])
        if key not in best or (r.get("pipeline_fps") or 0) > (best[key].get("pipeline_fps") or 0):
            best[key] = r
    keys = sorted(best)
    labels = [f"{d}\n{p}\nb{b}" for d, p, b in keys]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keys) + 2), 4.5))
    x = range(len(keys))
    ax.bar([i - 0.2 for i in x], [best[k].get("model_ips") or 0 for k in keys], 0.4, label="model img/s")
    ax.bar(
        [i + 0.2 for i in x],
        [best[k].get("pipeline_fps") or 0 for k in keys],
        0.4,
        label=f"pipeline FPS at {result['config']['res']}",
    )
    ax.axhline(result["ceiling"]["decode_fps"], color="grey", linestyle="--", label="decode+resize ceiling")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("frames / images per second")
    ax.set_title(summary_line(result["machine"])[:90], fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(_save_fig(fig, out / f"{stem}-fps.png"))
    plt.close(fig)
    acc = [r for r in rows if r.get("auc") is not None and r.get("pipeline_fps")]
    if acc:
        # one point per device/precision/scorer: its fastest configuration (batch, hint)
        top: dict[tuple, dict] = {}
        for r in acc:
            key = (r["device"], r["precision"], r["scorer"])
            if key not in top or r["pipeline_fps"] > top[key]["pipeline_fps"]:
                top[key] = r
        colors = {"FP32": "tab:blue", "FP16": "tab:orange", "INT8": "tab:green"}
        markers = {"knn:flat": "o", "knn:hnsw": "s", "knn": "D", "lof": "^"}
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for (device, precision, scorer), r in sorted(top.items()):
            ax.scatter(
                r["pipeline_fps"],
                r["auc"],
                s=60,
                color=colors.get(precision, "tab:grey"),
                marker=markers.get(scorer, "x"),
                label=f"{device} {precision} {scorer} (b{r['batch']})",
            )
        ax.set_xlabel(f"pipeline FPS at {result['config']['res']} (best batch/hint)")
        ax.set_ylabel("anomaly AUC")
        ax.set_title("accuracy vs speed", fontsize=9)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        written.append(_save_fig(fig, out / f"{stem}-accuracy.png"))
        plt.close(fig)
    return written


def _save_fig(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path
