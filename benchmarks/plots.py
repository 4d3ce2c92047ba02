"""PNG plots of the benchmark figures (matplotlib, no display needed)."""

import re


def plot_comparisons(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for result in results:
        series = [("vTorque", result["measured"]), ("floor", result["floor"])]
        medians = [s["median"] for _, s in series]
        errors = [[s["median"] - s["min"] for _, s in series], [s["max"] - s["median"] for _, s in series]]
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.bar([label for label, _ in series], medians, yerr=errors, capsize=6, color=["#3b6ea8", "#9a9a9a"])
        ax.set_ylabel("seconds (median, min-max)")
        ax.set_title(result["name"], fontsize=9)
        fig.tight_layout()
        fig.savefig(out / f"{slug(result['name'])}.png", dpi=110)
        plt.close(fig)


def plot_series(name, xs, series, out, xlabel):
    """Lines of median seconds over `xs`, one per label in `series` ({label: [summary, ...]})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for label, summaries in series.items():
        points = [(x, s["median"]) for x, s in zip(xs, summaries, strict=True) if s is not None]
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("seconds (median)")
    ax.set_title(name, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{slug(name)}.png", dpi=110)
    plt.close(fig)


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
