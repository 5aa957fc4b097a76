"""The planner, validation and status aggregation through Python give what the CLI gives."""

import json
import pathlib

import pytest

import fusioninfer

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_every_seed_story_is_covered():
    seed_stories = {"monolithic-qwen3-8b", "monolithic-multinode", "pd-volcano", "pd-router", "custom-epp-config"}
    assert seed_stories <= {p.stem for p in EXAMPLES}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_render_yaml_matches_the_cli_golden_file(example):
    text = example.read_text()
    assert fusioninfer.validate(text) == []
    assert fusioninfer.render_yaml(text) == (ROOT / "tests" / "golden" / example.name).read_text()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_plan_of_a_dict_equals_plan_of_the_yaml(example):
    text = example.read_text()
    objects = fusioninfer.plan(text)
    assert objects and all({"apiVersion", "kind", "metadata"} <= set(o) for o in objects)
    # A dict round-tripped through JSON plans to the same objects as the YAML text.
    as_dict = json.loads(json.dumps(_yaml_to_dict(text)))
    assert fusioninfer.plan(as_dict) == objects


def _yaml_to_dict(text):
    # The package itself needs no YAML library; the test suite installs PyYAML to make dicts.
    import yaml

    return yaml.safe_load(text)


def test_docstring_example_runs():
    import doctest

    assert doctest.testmod(fusioninfer).failed == 0


def test_invalid_spec_lists_every_error_naming_roles():
    errors = fusioninfer.validate((ROOT / "examples" / "invalid" / "mixed-worker-decoder.yaml").read_text())
    assert len(errors) == 3
    assert any('"worker"' in e and '"decode"' in e and "cannot be mixed" in e for e in errors)
    assert 'spec.roles[0].strategy (role "worker")' in errors[0]


def test_plan_of_an_invalid_spec_raises_with_the_cli_text():
    with pytest.raises(ValueError) as error:
        fusioninfer.plan((ROOT / "examples" / "invalid" / "mixed-worker-decoder.yaml").read_text())
    assert str(error.value).startswith("broken: 3 error(s)\n  - spec.roles[0].strategy")


def test_not_an_inference_service_is_a_value_error_naming_the_field():
    spec = {"apiVersion": "fusioninfer.io/v1alpha1", "kind": "InferenceService", "metadata": {"name": "a"},
            "spec": {"roles": [{"name": "w", "componentType": "gpu"}]}}
    with pytest.raises(ValueError, match=r"spec\.roles\[0\]\.componentType"):
        fusioninfer.validate(spec)
    with pytest.raises(ValueError, match="kind"):
        fusioninfer.validate({"apiVersion": "fusioninfer.io/v1alpha1", "kind": "Pod"})
    with pytest.raises(ValueError):
        fusioninfer.validate("roles: [")


@pytest.mark.parametrize("bad", [None, 3, ["a"], b"bytes"])
def test_wrong_spec_types_raise_type_error(bad):
    with pytest.raises(TypeError):
        fusioninfer.validate(bad)
    with pytest.raises(TypeError):
        fusioninfer.plan(bad)


def test_epp_image_option_and_crd():
    text = (ROOT / "examples" / "pd-router.yaml").read_text()
    deployment = next(o for o in fusioninfer.plan(text, epp_image="example.com/epp:1") if o["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "example.com/epp:1"
    with pytest.raises(TypeError):
        fusioninfer.plan(text, epp_image=1)
    crd = fusioninfer.crd()
    assert crd["metadata"]["name"] == "inferenceservices.fusioninfer.io"
    assert "fisvc" in crd["spec"]["names"]["shortNames"]


def test_aggregate_status_follows_children():
    spec = {
        "apiVersion": "fusioninfer.io/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": "llm", "namespace": "default", "generation": 3},
        "spec": {"roles": [{"name": "worker", "componentType": "worker", "replicas": 2,
                            "template": {"spec": {"containers": [{"name": "vllm", "image": "vllm"}]}}}]},
    }
    sts = {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "llm-worker", "namespace": "default",
                     "labels": {"fusioninfer.io/service": "llm", "fusioninfer.io/role-name": "worker"}},
        "spec": {"selector": {}, "template": {}, "serviceName": "llm-worker"},
        "status": {"replicas": 2, "readyReplicas": 1},
    }
    status = fusioninfer.aggregate_status(spec, [sts], now="2026-11-22T00:00:00Z")
    assert status["observedGeneration"] == 3
    assert status["components"]["worker"]["phase"] == "Deploying"
    assert status["components"]["worker"]["readyReplicas"] == 1
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    sts["status"]["readyReplicas"] = 2
    status = fusioninfer.aggregate_status(spec, [sts], now="2026-11-22T00:00:00Z")
    assert status["components"]["worker"]["phase"] == "Running"
    with pytest.raises(ValueError, match="unsupported kind"):
        fusioninfer.aggregate_status(spec, [{"apiVersion": "v1", "kind": "Secret", "metadata": {}}])
    with pytest.raises(TypeError):
        fusioninfer.aggregate_status(spec, "not a list")
    with pytest.raises(ValueError, match="now"):
        fusioninfer.aggregate_status(spec, [], now="yesterday")
