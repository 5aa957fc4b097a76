"""The scheduler and metrics parser through Python."""

import importlib.util
import pathlib

import pytest

import fusioninfer

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _compare_strategies():
    spec = importlib.util.spec_from_file_location("compare_strategies", ROOT / "examples" / "python" / "compare_strategies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def endpoints(n=3, **metrics):
    return [{"address": f"10.0.0.{i + 1}:8000", "labels": {}, "metrics": dict(metrics)} for i in range(n)]


def test_pick_returns_a_candidate_and_is_seeded():
    picks = [fusioninfer.Scheduler(strategy="queue-size", seed=7).pick({"model": "m", "prompt": "hi"}, endpoints())
             for _ in range(3)]
    assert picks[0]["primary"] in {e["address"] for e in endpoints()}
    assert len({p["primary"] for p in picks}) == 1, "same seed, same decision"


def test_prefix_affinity_and_feedback():
    scheduler = fusioninfer.Scheduler()  # prefix-cache by default
    prompt = "You are a helpful assistant. " * 50
    first = scheduler.pick({"model": "m", "prompt": prompt + "Q1"}, endpoints())
    scheduler.complete(first["decision_id"])
    second = scheduler.pick({"model": "m", "messages": [{"role": "user", "content": prompt + "Q2"}]}, endpoints())
    again = scheduler.pick({"model": "m", "prompt": prompt + "Q3"}, endpoints())
    assert again["primary"] == first["primary"], "a repeated prefix goes where it was routed"
    assert second["decision_id"] != again["decision_id"]
    with pytest.raises(ValueError, match="unknown or already completed"):
        scheduler.complete(first["decision_id"])


def test_rejections_carry_http_status():
    scheduler = fusioninfer.Scheduler(strategy="queue-size")
    empty = scheduler.pick({"model": "m", "prompt": "x"}, [])
    assert empty["rejected"] and empty["status"] == 503 and empty["message"]
    saturated = scheduler.pick({"model": "m", "prompt": "x"}, endpoints(waiting=50))
    assert saturated["rejected"] and saturated["status"] == 429
    never_scraped = scheduler.pick({"model": "m", "prompt": "x"}, endpoints(age_ms=None))
    assert never_scraped["status"] == 429, "stale metrics count as busy, never idle"


def test_pd_strategy_adds_the_prefiller_header():
    scheduler = fusioninfer.Scheduler(strategy="pd-disaggregation")
    assert scheduler.profiles == ["decode", "prefill"]
    fleet = [
        {"address": "10.0.0.1:8000", "labels": {"fusioninfer.io/component-type": "decoder"}},
        {"address": "10.0.0.2:8000", "labels": {"fusioninfer.io/component-type": "prefiller"}},
    ]
    decision = scheduler.pick({"model": "m", "prompt": "long uncached prompt " * 200}, fleet)
    assert decision["primary"] == "10.0.0.1:8000"
    assert decision["headers"]["x-prefiller-host-port"] == "10.0.0.2:8000"


def test_bad_arguments_raise_type_or_value_errors():
    scheduler = fusioninfer.Scheduler()
    with pytest.raises(TypeError):
        scheduler.pick("not a dict", endpoints())
    with pytest.raises(TypeError):
        scheduler.pick({"model": "m", "prompt": "x"}, "10.0.0.1:8000")
    with pytest.raises(ValueError, match="prompt or messages"):
        scheduler.pick({"model": "m"}, endpoints())
    with pytest.raises(ValueError, match="messages"):
        scheduler.pick({"model": "m", "messages": []}, endpoints())
    with pytest.raises(ValueError, match=r"endpoints\[0\]\.address"):
        scheduler.pick({"model": "m", "prompt": "x"}, [{"address": "nowhere"}])
    with pytest.raises(ValueError, match="kv_cache_usage"):
        scheduler.pick({"model": "m", "prompt": "x"}, endpoints(kv_cache_usage=2.0))
    with pytest.raises(ValueError, match="unknown field"):
        scheduler.pick({"model": "m", "prompt": "x", "temperature": 0}, endpoints())
    with pytest.raises(ValueError, match="unknown strategy"):
        fusioninfer.Scheduler(strategy="fastest")
    with pytest.raises(ValueError, match="not both"):
        fusioninfer.Scheduler(config="x", strategy="queue-size")
    with pytest.raises(ValueError, match="no-such-plugin"):
        fusioninfer.Scheduler(config=fusioninfer.strategy_config("queue-size").replace("queue-scorer", "no-such-plugin"))
    with pytest.raises(TypeError):
        fusioninfer.Scheduler(seed="1")
    with pytest.raises(TypeError):
        scheduler.complete("0")


def test_prefix_strategy_beats_round_robin_on_a_shared_prefix_replay():
    compare = _compare_strategies()
    trace = compare.synthetic_trace()
    prefix = compare.replay("prefix-cache", trace)
    round_robin = compare.replay("round-robin", trace)
    assert prefix["routed"] == round_robin["routed"] == len(trace)
    assert prefix["hit_rate"] > round_robin["hit_rate"] + 0.2, (prefix, round_robin)
    assert prefix["hit_rate"] <= prefix["oracle_hit_rate"]


def test_parse_metrics_reads_the_real_vllm_page(shared):
    fixtures = shared / "fixtures" / "vllm-0.32.0-cpu"
    idle = fusioninfer.parse_metrics((fixtures / "metrics-idle.txt").read_text())
    assert idle["block_size"] == 128 and idle["num_blocks"] == 4096
    assert idle["waiting"] == 0 and idle["running"] == 0
    after = fusioninfer.parse_metrics((fixtures / "metrics-after.txt").read_text(), engine="vllm")
    assert 0.0 <= after["kv_cache_usage"] <= 1.0
    with pytest.raises(ValueError, match="not sglang"):
        fusioninfer.parse_metrics((fixtures / "metrics-idle.txt").read_text(), engine="sglang")
    with pytest.raises(ValueError):
        fusioninfer.parse_metrics("garbage {{{")
    with pytest.raises(TypeError):
        fusioninfer.parse_metrics(b"bytes")
