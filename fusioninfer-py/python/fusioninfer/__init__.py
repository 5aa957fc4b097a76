"""FusionInfer for Python: the same planner, validation, status aggregation, metrics parser and
request scheduler as the `fusioninfer` CLI and the operator — the Rust code itself, not a copy.

>>> import fusioninfer
>>> spec = {"apiVersion": "fusioninfer.io/v1alpha1", "kind": "InferenceService",
...         "metadata": {"name": "demo"},
...         "spec": {"roles": [{"name": "worker", "componentType": "worker",
...                             "template": {"spec": {"containers": [{"name": "vllm", "image": "vllm"}]}}}]}}
>>> fusioninfer.validate(spec)
[]
>>> [o["kind"] for o in fusioninfer.plan(spec)]
['StatefulSet', 'Service']
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from . import _native

__all__ = [
    "validate",
    "plan",
    "render_yaml",
    "crd",
    "aggregate_status",
    "parse_metrics",
    "strategy_config",
    "Scheduler",
    "__version__",
]

__version__: str = _native.__version__

Spec = Union[str, Mapping[str, Any]]


def _spec_text(spec: Spec) -> str:
    """A spec as text for the native parser: YAML/JSON strings as they are, dicts as JSON."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        return json.dumps(spec)
    raise TypeError(f"spec must be a dict or a YAML string, not {type(spec).__name__}")


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{what} is not JSON-serialisable: {error}") from None


def _expect(value: Any, kind: type, what: str) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"{what} must be a {kind.__name__}, not {type(value).__name__}")


def validate(spec: Spec) -> List[str]:
    """Every validation error of an InferenceService (dict or YAML string), formatted as
    `fusioninfer validate` prints them, each naming the role and field. Empty when valid.

    Raises ValueError when the text is not an InferenceService at all (bad YAML, wrong kind, a
    field of the wrong type)."""
    return _native.validate(_spec_text(spec))


def plan(spec: Spec, *, epp_image: Optional[str] = None) -> List[Dict[str, Any]]:
    """The Kubernetes objects an InferenceService becomes: the same objects, in the same order,
    as `fusioninfer render`. Raises ValueError listing every error of an invalid spec."""
    if epp_image is not None:
        _expect(epp_image, str, "epp_image")
    return json.loads(_native.plan(_spec_text(spec), epp_image))


def render_yaml(spec: Spec, *, epp_image: Optional[str] = None) -> str:
    """`plan` as a YAML stream, byte for byte what `fusioninfer render` prints."""
    if epp_image is not None:
        _expect(epp_image, str, "epp_image")
    return _native.render_yaml(_spec_text(spec), epp_image)


def crd() -> Dict[str, Any]:
    """The InferenceService CustomResourceDefinition."""
    return json.loads(_native.crd())


def aggregate_status(
    spec: Spec, observed: Sequence[Mapping[str, Any]], *, now: Optional[str] = None
) -> Dict[str, Any]:
    """The InferenceService status computed from observed child objects (StatefulSets,
    LeaderWorkerSets, Deployments, Pods, PodGroups as plain Kubernetes dicts), exactly as the
    operator computes it. `now` is an RFC 3339 time (default: now). Previous status in
    `spec["status"]` keeps transition times stable."""
    if isinstance(observed, (str, bytes)) or not isinstance(observed, Sequence):
        raise TypeError(f"observed must be a list of dicts, not {type(observed).__name__}")
    for index, item in enumerate(observed):
        _expect(item, Mapping, f"observed[{index}]")
    if now is not None:
        _expect(now, str, "now")
    return json.loads(_native.aggregate_status(_spec_text(spec), _json(list(observed), "observed"), now))


def parse_metrics(text: str, engine: str = "vllm") -> Dict[str, Any]:
    """Parses a model server's Prometheus `/metrics` page into the metrics the scheduler reads:
    `waiting`, `running`, `kv_cache_usage`, `block_size`, `num_blocks`, `lora_running`,
    `lora_waiting`, `max_loras`. `engine` ("vllm" or "sglang") must match the page."""
    _expect(text, str, "text")
    _expect(engine, str, "engine")
    if engine not in ("vllm", "sglang"):
        raise ValueError(f"engine must be 'vllm' or 'sglang', not {engine!r}")
    parsed = json.loads(_native.parse_metrics(text))
    if parsed["engine"] != engine:
        raise ValueError(f"the page is from {parsed['engine']}, not {engine}")
    return parsed["metrics"]


def strategy_config(strategy: str) -> str:
    """The EndpointPickerConfig YAML a router `strategy` stands for."""
    _expect(strategy, str, "strategy")
    return _native.strategy_config(strategy)


class Scheduler:
    """FusionInfer's request scheduler (the endpoint picker's brain) over endpoint snapshots you
    supply, for replaying traces and comparing strategies.

    `config` is an EndpointPickerConfig YAML (GAIE format); `strategy` one of the router
    strategies (`prefix-cache` by default). `seed` makes tie-breaking reproducible.

    An endpoint is a dict ``{"address": "10.0.0.1:8000", "labels": {...}, "metrics": {...}}``;
    missing metrics default to ``waiting=0, running=0, kv_cache_usage=0.0, age_ms=0`` (fresh
    and idle); ``age_ms=None`` means never scraped, which counts as saturated. A request is
    ``{"model": ..., "prompt": ...}`` or ``{"model": ..., "messages": [{"role", "content"}]}``,
    optionally with ``stream``, ``lora``, ``cache_salt``, ``request_id``, ``prompt_tokens``.
    """

    def __init__(
        self, config: Optional[str] = None, strategy: Optional[str] = None, *, seed: int = 0
    ) -> None:
        if config is not None:
            _expect(config, str, "config")
        if strategy is not None:
            _expect(strategy, str, "strategy")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise TypeError("seed must be a non-negative int")
        self._native = _native.Scheduler(config, strategy, seed)

    def pick(self, request: Mapping[str, Any], endpoints: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        """Routes one request. Returns ``{"primary", "fallbacks", "headers", "decision_id"}``, or
        ``{"rejected": True, "status": 429|503|500, "reason", "message"}``."""
        _expect(request, Mapping, "request")
        if isinstance(endpoints, (str, bytes)) or not isinstance(endpoints, Sequence):
            raise TypeError(f"endpoints must be a list of dicts, not {type(endpoints).__name__}")
        for index, endpoint in enumerate(endpoints):
            _expect(endpoint, Mapping, f"endpoints[{index}]")
        return json.loads(self._native.pick(_json(dict(request), "request"), _json(list(endpoints), "endpoints")))

    def complete(self, decision_id: int, *, status: int = 200, served_by: Optional[str] = None) -> None:
        """Reports that a routed request finished (so load accounting and indexes follow)."""
        if not isinstance(decision_id, int) or isinstance(decision_id, bool) or decision_id < 0:
            raise TypeError("decision_id must be a non-negative int from pick()")
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        if served_by is not None:
            _expect(served_by, str, "served_by")
        self._native.complete(decision_id, status, served_by)

    @property
    def profiles(self) -> List[str]:
        """Names of the scheduling profiles of the configuration."""
        return self._native.profiles()
