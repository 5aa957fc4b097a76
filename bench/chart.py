"""Draw the routing benchmark's chart from bench.json (written by `fusioninfer-load bench`).

    python bench/chart.py bench/results/bench.json bench/results/bench.png

Three panels, one group of bars per concurrency level: prefix-cache hit rate (with the oracle's
as a dashed line), model-time TTFT p50 and p90, and throughput. Needs matplotlib (`make bench`
installs it into .venv).
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    with open(source) as f:
        data = json.load(f)
    runs = data["strategies"]
    strategies = list(dict.fromkeys(r["name"] for r in runs))
    levels = sorted({r["concurrency"] for r in runs})
    by_key = {(r["concurrency"], r["name"]): r for r in runs}
    colors = ["#9e9e9e", "#64b5f6", "#ffb74d", "#43a047", "#8e24aa", "#e53935"]
    width = 0.8 / len(strategies)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    panels = [
        ("prefix-cache hit rate (dashed: oracle)", lambda r: r["hit_rate"], "{:.2f}"),
        ("TTFT, model time (ms): p50 solid, p90 light", lambda r: r["ttft_model_ms_p50"], "{:.0f}"),
        ("throughput (requests / s, wall)", lambda r: r["requests_per_s"], "{:.0f}"),
    ]
    for ax, (title, value, fmt) in zip(axes, panels):
        for i, name in enumerate(strategies):
            xs, ys = [], []
            for j, level in enumerate(levels):
                run = by_key.get((level, name))
                if run is None:
                    continue
                xs.append(j + (i - (len(strategies) - 1) / 2) * width)
                ys.append(value(run))
            color = colors[i % len(colors)]
            if title.startswith("TTFT"):
                p90 = [by_key[(lv, name)]["ttft_model_ms_p90"] for lv in levels if (lv, name) in by_key]
                ax.bar(xs, p90, width * 0.95, color=color, alpha=0.35)
            bars = ax.bar(xs, ys, width * 0.95, color=color, label=name)
            for bar, y in zip(bars, ys):
                ax.annotate(fmt.format(y), (bar.get_x() + bar.get_width() / 2, y),
                            ha="center", va="bottom", fontsize=7)
        if title.startswith("prefix"):
            for j, level in enumerate(levels):
                oracle = max(by_key[(level, n)]["oracle_hit_rate"] for n in strategies if (level, n) in by_key)
                ax.hlines(oracle, j - 0.45, j + 0.45, colors="black", linestyles="dashed", linewidth=1)
            ax.set_ylim(0, 1.05)
        ax.set_xticks(range(len(levels)))
        ax.set_xticklabels([f"{lv} in flight" for lv in levels])
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("FusionInfer routing strategies on 4 simulated vLLM servers through Envoy + the endpoint picker",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: chart.py bench.json bench.png")
    main(sys.argv[1], sys.argv[2])
