//! The `fusioninfer` binary end to end: golden renders of every example, validation exit codes
//! and messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn fusioninfer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fusioninfer"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn kinds_and_names(yaml: &str) -> Vec<(String, String)> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(yaml).unwrap();
    docs.iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn render_matches_golden_files_for_every_example() {
    let examples = std::fs::read_dir(root().join("examples")).unwrap();
    let mut rendered = 0;
    for entry in examples {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let relative = path
            .strip_prefix(root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let output = fusioninfer(&["render", "-f", &relative]);
        assert!(output.status.success(), "{relative}: {}", stderr(&output));
        let golden = format!(
            "tests/golden/{}",
            path.file_name().unwrap().to_str().unwrap()
        );
        fusioninfer_tests::assert_golden(&golden, &stdout(&output));
        rendered += 1;
    }
    assert_eq!(
        rendered, 7,
        "every seed story (and the local demo, and kv-aware) has an example"
    );
}

#[test]
fn pd_example_renders_podgroup_two_leaderworkersets_and_router_objects() {
    let output = fusioninfer(&["render", "-f", "examples/pd-volcano.yaml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let objects = kinds_and_names(&stdout(&output));
    let expected = [
        ("PodGroup", "deepseek"),
        ("LeaderWorkerSet", "deepseek-prefill"),
        ("LeaderWorkerSet", "deepseek-decode"),
        ("ServiceAccount", "deepseek-pd-sidecar"),
        ("Role", "deepseek-pd-sidecar"),
        ("RoleBinding", "deepseek-pd-sidecar"),
        ("ServiceAccount", "deepseek-router"),
        ("Role", "deepseek-router"),
        ("RoleBinding", "deepseek-router"),
        ("ConfigMap", "deepseek-router"),
        ("Deployment", "deepseek-router"),
        ("Service", "deepseek-router"),
        ("InferencePool", "deepseek"),
        ("HTTPRoute", "deepseek"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
    assert_eq!(objects, expected);
}

#[test]
fn validate_lists_every_error_and_names_both_mixed_roles() {
    let output = fusioninfer(&[
        "validate",
        "-f",
        "examples/invalid/mixed-worker-decoder.yaml",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let errors = stderr(&output);
    assert!(errors.contains("broken: 3 error(s)"), "{errors}");
    let mixing = errors
        .lines()
        .find(|l| l.contains("cannot be mixed"))
        .expect("mixing error");
    assert!(
        mixing.contains("\"worker\"") && mixing.contains("\"decode\""),
        "{mixing}"
    );
    assert!(
        errors.contains("spec.roles[0].strategy (role \"worker\")"),
        "{errors}"
    );
    assert!(
        errors.contains("spec.roles[2].multinode (role \"router\")"),
        "{errors}"
    );
}

#[test]
fn validate_accepts_the_examples_and_render_refuses_invalid_specs() {
    let output = fusioninfer(&["validate", "-f", "examples/pd-router.yaml"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output), "llama-pd: valid\n");
    let output = fusioninfer(&["render", "-f", "examples/invalid/mixed-worker-decoder.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).is_empty(), "no objects for an invalid spec");
}

#[test]
fn unreadable_and_malformed_input_is_a_clear_error() {
    let output = fusioninfer(&["validate", "-f", "does-not-exist.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("reading does-not-exist.yaml"),
        "{}",
        stderr(&output)
    );
    let dir = std::env::temp_dir().join(format!("fusioninfer-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(&file, "apiVersion: fusioninfer.io/v1alpha1\nkind: InferenceService\nmetadata: {name: a}\nspec: {roles: [{name: w, componentType: gpu}]}\n").unwrap();
    let output = fusioninfer(&["validate", "-f", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("spec.roles[0].componentType"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn crd_command_prints_the_checked_in_crd() {
    let output = fusioninfer(&["crd"]);
    assert!(output.status.success());
    let file =
        std::fs::read_to_string(root().join("deploy/crd/fusioninfer.io_inferenceservices.yaml"))
            .unwrap();
    assert_eq!(stdout(&output), file);
}
