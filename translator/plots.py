"""PNG plots people would rather look at than read: training curves and attention heatmaps."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Sequence

from translator.io import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def read_metrics(path: Path) -> dict[str, list[dict]]:
    """metrics.jsonl → {"train": [...], "dev": [...]}, keeping the last entry logged for each step."""
    by_kind: dict[str, dict[int, dict]] = {"train": {}, "dev": {}}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            by_kind.setdefault(entry.get("kind", "train"), {})[entry["step"]] = entry
    return {kind: [entries[s] for s in sorted(entries)] for kind, entries in by_kind.items()}


def plot_training_curves(metrics_path: Path, png_path: Path) -> None:
    """Four panels: training and dev loss, dev BLEU/chrF, gradient norm, learning rate."""
    metrics = read_metrics(metrics_path)
    train, dev = metrics["train"], metrics["dev"]
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0][0]
    ax.plot([e["step"] for e in train], [e["loss"] for e in train], label="train loss (smoothed labels)")
    ax.plot([e["step"] for e in dev], [e["dev_loss"] for e in dev], "o-", label="dev loss")
    ax.set_title("loss")
    ax.legend()
    ax = axes[0][1]
    for key in sorted({k for e in dev for k in e if k.startswith(("bleu", "chrf", "exact", "sense"))}):
        ax.plot([e["step"] for e in dev if key in e], [e[key] for e in dev if key in e], "o-", label=key)
    ax.set_title("dev scores (greedy)")
    if dev:
        ax.legend(fontsize="small")
    ax = axes[1][0]
    ax.plot([e["step"] for e in train], [e["grad_norm"] for e in train])
    ax.set_yscale("log")
    ax.set_title("gradient norm (before clipping)")
    ax = axes[1][1]
    ax.plot([e["step"] for e in train], [e["lr"] for e in train])
    ax.set_title("learning rate")
    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, png_path)
    plt.close(fig)


def plot_attention(weights: Sequence[Sequence[float]], source: list[str], target: list[str], png_path: Path) -> None:
    """Heatmap of attention weights: target pieces (rows) × source pieces (columns)."""
    plt = _pyplot()
    plt.rcParams["font.family"] = _hangul_font() or plt.rcParams["font.family"]
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(source) + 2), max(3, 0.4 * len(target) + 1.5)))
    image = ax.imshow(weights, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)), source, rotation=60, ha="right")
    ax.set_yticks(range(len(target)), target)
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    fig.colorbar(image, ax=ax, fraction=0.046)
    with warnings.catch_warnings():  # without a Hangul font matplotlib warns once per glyph
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
        _save(fig, png_path)
    plt.close(fig)


def _hangul_font() -> str | None:
    """A font with Hangul glyphs if one is installed (else labels show boxes, the plot still works)."""
    from matplotlib import font_manager

    for font in font_manager.fontManager.ttflist:
        if any(name in font.name for name in ("Nanum", "Noto Sans CJK", "Noto Sans KR", "Malgun", "UnDotum", "Baekmuk")):
            return font.name
    return None
