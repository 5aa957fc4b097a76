"""Compare FusionInfer routing strategies on a synthetic shared-prefix trace.

    python examples/python/compare_strategies.py            # table (and a PNG if matplotlib is installed)

Each request starts with one of a few long system prompts followed by a short user question.
A toy fleet model stands in for the model servers: every server keeps an LRU of the system
prompts it has seen (its prefix cache), requests occupy a server for a few steps (so queues build
and load-aware strategies can react), and a request "hits" when its server still holds its system
prompt. The scheduler is the real one (`fusioninfer.Scheduler`); only the fleet is modelled.
"""

from __future__ import annotations

import random
import sys
from collections import OrderedDict, deque
from typing import Dict, List, Sequence, Tuple

import fusioninfer

STRATEGIES = ["round-robin", "queue-size", "prefix-cache"]


def synthetic_trace(groups: int = 12, requests: int = 600, seed: int = 1) -> List[Tuple[int, str]]:
    """(group, prompt) pairs: `groups` system prompts of ~2 KiB, popularity skewed (Zipf-like)."""
    rng = random.Random(seed)
    systems = [
        f"System prompt {g}: " + " ".join(f"rule-{g}-{i} keep answers short and cite sources." for i in range(40))
        for g in range(groups)
    ]
    weights = [1.0 / (g + 1) for g in range(groups)]
    trace = []
    for n in range(requests):
        group = rng.choices(range(groups), weights)[0]
        trace.append((group, f"{systems[group]}\nUser question {n}: what is {rng.randint(0, 10**6)}?"))
    return trace


def replay(
    strategy: str,
    trace: Sequence[Tuple[int, str]],
    servers: int = 4,
    cache_prompts: int = 4,
    service_steps: int = 6,
    seed: int = 0,
) -> Dict[str, float]:
    """Routes the trace through the real scheduler over the toy fleet; returns the hit rate, the
    oracle hit rate (every system prompt computed once per fleet) and the busiest server's share
    of requests relative to a fair share."""
    scheduler = fusioninfer.Scheduler(strategy=strategy, seed=seed)
    addresses = [f"10.0.0.{i + 1}:8000" for i in range(servers)]
    caches = [OrderedDict() for _ in addresses]  # system prompt -> None, LRU order
    in_flight: deque = deque()  # (finish_step, server index, decision_id)
    running = [0] * servers
    served = [0] * servers
    hits = 0
    for step, (group, prompt) in enumerate(trace):
        while in_flight and in_flight[0][0] <= step:
            _, index, decision = in_flight.popleft()
            running[index] -= 1
            scheduler.complete(decision, served_by=addresses[index])
        endpoints = [
            {
                "address": address,
                "labels": {"fusioninfer.io/component-type": "worker"},
                # vLLM counts cached-but-idle blocks as free, so KV usage follows running requests.
                "metrics": {"running": min(running[i], 4), "waiting": max(running[i] - 4, 0),
                            "kv_cache_usage": min(1.0, running[i] / 10)},
            }
            for i, address in enumerate(addresses)
        ]
        decision = scheduler.pick({"model": "demo", "prompt": prompt}, endpoints)
        if decision.get("rejected"):
            continue
        index = addresses.index(decision["primary"])
        cache = caches[index]
        if group in cache:
            hits += 1
            cache.move_to_end(group)
        else:
            cache[group] = None
            if len(cache) > cache_prompts:
                cache.popitem(last=False)
        served[index] += 1
        running[index] += 1
        in_flight.append((step + service_steps, index, decision["decision_id"]))
    total = sum(served)
    distinct = len({group for group, _ in trace})
    return {
        "hit_rate": hits / total,
        "oracle_hit_rate": (len(trace) - distinct) / len(trace),
        "max_share": max(served) / (total / servers),
        "routed": total,
    }


def main() -> int:
    trace = synthetic_trace()
    results = {strategy: replay(strategy, trace) for strategy in STRATEGIES}
    print(f"{'strategy':<14} {'hit rate':>9} {'of oracle':>10} {'busiest/fair':>13}")
    for strategy, r in results.items():
        print(f"{strategy:<14} {r['hit_rate']:>9.3f} {r['hit_rate'] / r['oracle_hit_rate']:>10.1%} {r['max_share']:>13.2f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    figure, axis = plt.subplots(figsize=(5, 3))
    axis.bar(list(results), [r["hit_rate"] for r in results.values()])
    axis.axhline(next(iter(results.values()))["oracle_hit_rate"], linestyle="--", label="oracle")
    axis.set_ylabel("prefix hit rate")
    axis.legend()
    figure.tight_layout()
    figure.savefig("strategy-hit-rates.png")
    print("wrote strategy-hit-rates.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
