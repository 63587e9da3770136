"""Quality vs throughput, like the paper's Fig. 2: one curve per method over K."""

from __future__ import annotations

from pathlib import Path


def plot_quality_vs_throughput(rows: list[dict], metric: str, path: str | Path, title: str = "") -> Path:
    """Plot `summarize` rows: x = tokens/s, y = `metric` (± sd), a panel per temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temps = sorted({r["temperature"] for r in rows})
    fig, axes = plt.subplots(1, len(temps), figsize=(5 * len(temps), 4), squeeze=False)
    joint = {r["temperature"]: r for r in rows if r["method"] == "joint" and metric in r}
    for ax, T in zip(axes[0], temps):
        labels = sorted({r["method"] for r in rows if r["method"].startswith("adjust")})
        for method, style in [("parallel", "o--")] + [(m, "s-" if m == "adjust" else "^:") for m in labels]:
            pts = sorted((r for r in rows if r["method"] == method and r["temperature"] == T and metric in r),
                         key=lambda r: r["K"])
            if T in joint:  # every curve starts at exact sampling (K = 1)
                pts = [joint[T]] + pts
            if not pts:
                continue
            ax.errorbar([r["tokens_per_s"] for r in pts], [r[metric] for r in pts],
                        yerr=[r.get(metric + "_sd", 0.0) for r in pts], fmt=style, capsize=3, label=method)
            for r in pts:
                ax.annotate(f"K={r['K']}", (r["tokens_per_s"], r[metric]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
        ax.set_xlabel("tokens / s")
        ax.set_ylabel(metric)
        ax.set_title(f"{title} T={T}".strip())
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
