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
    return _save(fig, path)


def plot_frontier(rows: list[dict], metric: str, path: str | Path, title: str = "") -> Path:
    """`frontier_rows` as the paper's Fig. 2: one line per method, quality vs tokens per base forward
    (log2 axis) and vs tokens/s measured in the same run, a row of panels per temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temps = sorted({r["temperature"] for r in rows})
    fig, axes = plt.subplots(len(temps), 2, figsize=(11, 4 * len(temps)), squeeze=False)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    styles = dict(zip(methods, ["k*", "o--", "s-", "^-", "v-", "D-", "P-", "x:", "h:", "<-", ">-"]))
    for (ax_tpf, ax_tps), T in zip(axes, temps):
        joint = [r for r in rows if r["method"] == "joint" and r["temperature"] == T and metric in r]
        for method in methods:
            pts = [r for r in rows if r["method"] == method and r["temperature"] == T and metric in r]
            if method != "joint":
                pts = joint + pts  # every curve starts at exact sampling
            pts.sort(key=lambda r: r["tpf"])
            if not pts:
                continue
            y, err = [r[metric] for r in pts], [r.get(metric + "_sd", 0.0) for r in pts]
            style = styles.get(method, "o-")
            ax_tpf.errorbar([r["tpf"] for r in pts], y, yerr=err, fmt=style, capsize=2, label=method)
            ax_tps.errorbar([r["tokens_per_s"] for r in pts], y, yerr=err, fmt=style, capsize=2, label=method)
        ax_tpf.set_xscale("log", base=2)
        ax_tpf.set_xlabel("tokens per base forward (TPF)")
        ax_tps.set_xlabel("tokens / s (this run)")
        for ax in (ax_tpf, ax_tps):
            ax.set_ylabel(metric)
            ax.set_title(f"{title} T={T}".strip())
            ax.grid(alpha=0.3)
        ax_tpf.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
