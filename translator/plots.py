"""PNG plots people would rather look at than read: training curves, attention heatmaps and gradient flow."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Sequence

from translator.config import SCORE_PREFIXES
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
    for key in sorted({k for e in dev for k in e if k.startswith(SCORE_PREFIXES)}):
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


def plot_gradient_flow(norms: dict[str, dict[str, list[float]]], grad_norms: dict[str, dict[str, list[float]]],
                       clip_norm: float, png_path: Path) -> None:
    """‖∂L/∂h_t‖ over t on a log scale, one line per cell, at initialisation, after training and after
    training with clipping; a fourth panel shows the global gradient norm during training.

    `norms[cell][condition]` lists the norms for t = 1..T; `grad_norms[cell][condition]` the per-step
    global norms (before clipping). Exact zeros (underflow) cannot be drawn on a log axis: they are gaps.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    titles = {"init": "at initialisation", "trained": "after training, no clipping",
              "trained_clipped": f"after training, clipping at {clip_norm:g}"}
    colors = {cell: f"C{i}" for i, cell in enumerate(norms)}  # one colour per cell in every panel
    for ax, (condition, title) in zip(axes.flat, titles.items()):
        for cell, by_condition in norms.items():
            values = [v if v > 0 else float("nan") for v in by_condition[condition]]
            ax.plot(range(1, len(values) + 1), values, color=colors[cell], label=cell)
        ax.set_yscale("log")
        ax.set_title(f"‖∂L/∂h_t‖ {title}")
        ax.set_xlabel("time step t (the label is the token read at t = 1)")
    ax = axes[1][1]
    for cell, by_condition in grad_norms.items():
        for condition, style in (("trained", "-"), ("trained_clipped", ":")):
            values = by_condition.get(condition, [])
            ax.plot(range(1, len(values) + 1), values, style, color=colors.get(cell), linewidth=1,
                    label=f"{cell}{' (clipped run)' if style == ':' else ''}")
    ax.axhline(clip_norm, color="black", linewidth=0.8, linestyle="--", label=f"clip norm {clip_norm:g}")
    ax.set_yscale("log")
    ax.set_title("global gradient norm before clipping")
    ax.set_xlabel("training step")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    _save(fig, png_path)
    plt.close(fig)


def plot_saliency(pieces: list[str], embedding_grad: Sequence[float], state_grad: Sequence[float], title: str,
                  png_path: Path) -> None:
    """Bars per source piece: ‖∂ log p(y|x)/∂e(x_t)‖ (top) and ‖∂ log p(y|x)/∂s_t‖ of the encoder states."""
    plt = _pyplot()
    plt.rcParams["font.family"] = _hangul_font() or plt.rcParams["font.family"]
    fig, axes = plt.subplots(2, 1, figsize=(max(5, 0.55 * len(pieces) + 2), 6), sharex=True)
    positions = range(len(pieces))
    axes[0].bar(positions, embedding_grad, color="tab:blue")
    axes[0].set_ylabel("‖∂ log p / ∂e(x_t)‖")
    axes[0].set_title(title)
    axes[1].bar(positions, state_grad, color="tab:orange")
    axes[1].set_ylabel("‖∂ log p / ∂s_t‖ (encoder)")
    axes[1].set_xticks(list(positions), pieces, rotation=60, ha="right")
    axes[1].set_xlabel("source piece")
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    with warnings.catch_warnings():  # without a Hangul font matplotlib warns once per glyph
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
        _save(fig, png_path)
    plt.close(fig)
