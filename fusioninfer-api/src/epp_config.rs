//! `EndpointPickerConfig`: the scheduler configuration as data, in the Gateway API Inference
//! Extension format (also accepted with llm-d's API group).
//!
//! The planner writes it into the endpoint picker's ConfigMap and checks a user-supplied one;
//! `fusioninfer-sched` turns it into plugins. Parsing here checks structure and references only;
//! whether a plugin type exists and its parameters fit is the scheduler registry's business.

use serde::{Deserialize, Serialize};

/// API versions accepted for `apiVersion`.
pub const ACCEPTED_API_VERSIONS: [&str; 2] = [
    "inference.networking.x-k8s.io/v1alpha1",
    "llm-d.ai/v1alpha1",
];

/// The expected `kind`.
pub const KIND: &str = "EndpointPickerConfig";

/// A whole scheduler configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPickerConfig {
    /// One of [`ACCEPTED_API_VERSIONS`].
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// Plugin instances.
    #[serde(default)]
    pub plugins: Vec<PluginSpec>,
    /// Profiles; a request runs through one or more of them.
    #[serde(default)]
    pub scheduling_profiles: Vec<SchedulingProfile>,
    /// Saturation thresholds (GAIE `saturationDetector`); defaults apply when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saturation_detector: Option<SaturationDetectorConfig>,
    /// Upstream feature gates; kept so existing configs load, not interpreted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_gates: Option<serde_json::Value>,
}

/// One plugin instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// Instance name that profiles refer to; defaults to `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Registered plugin type, e.g. `prefix-cache-scorer`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Type-specific parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
}

impl PluginSpec {
    /// The name profiles use: `name`, else `type`.
    pub fn instance_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.type_)
    }
}

/// A scheduling profile: filters, weighted scorers and a picker, by reference.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulingProfile {
    /// Profile name, e.g. `default`, `prefill`, `decode`.
    pub name: String,
    /// Plugins of the profile, in order.
    #[serde(default)]
    pub plugins: Vec<ProfilePluginRef>,
}

/// A plugin used by a profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfilePluginRef {
    /// Instance name of a plugin in `plugins`.
    pub plugin_ref: String,
    /// Scorer weight; 1 when absent (ignored for non-scorers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// Thresholds above which an endpoint counts as saturated.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaturationDetectorConfig {
    /// Waiting requests at or above which an endpoint is saturated (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth_threshold: Option<u32>,
    /// KV-cache usage (0..1) at or above which an endpoint is saturated (default 0.8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_util_threshold: Option<f64>,
    /// Metrics older than this count as saturated, e.g. `200ms` (default 200 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_staleness_threshold: Option<String>,
}

/// [`ConfigError::field`] of an error about the whole document (it does not parse at all).
pub const DOCUMENT: &str = "endpointPickerConfig";

/// A config that does not parse or whose references do not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where in the config, e.g. `schedulingProfiles[0].plugins[1].pluginRef`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Plugin types that put the prefill endpoint of a decision in `x-prefiller-host-port`.
pub const PREFILL_HEADER_HANDLER_TYPES: [&str; 1] = ["prefill-header-handler"];

/// Profile handlers that disaggregate prefill from decode; the scheduler gives them a default
/// header handler when the config declares none.
pub const PD_PROFILE_HANDLER_TYPES: [&str; 2] = ["pd-profile-handler", "disagg-profile-handler"];

impl EndpointPickerConfig {
    /// Whether a plugin of type `type_` is declared.
    pub fn has_plugin_type(&self, type_: &str) -> bool {
        self.plugins.iter().any(|p| p.type_ == type_)
    }

    /// Whether routing with this config may name a prefiller per request (a header handler,
    /// or a PD profile handler, which gets a default one): decode pods then need the
    /// prefill/decode sidecar.
    pub fn names_prefillers(&self) -> bool {
        PREFILL_HEADER_HANDLER_TYPES
            .iter()
            .chain(&PD_PROFILE_HANDLER_TYPES)
            .any(|type_| self.has_plugin_type(type_))
    }

    /// Parses YAML (or JSON) and checks its structure: accepted `apiVersion` and `kind`, unique
    /// plugin instance names, at least one profile, unique profile names, and profile references
    /// that name a declared plugin. Returns every problem found.
    pub fn parse(text: &str) -> Result<Self, Vec<ConfigError>> {
        let config: EndpointPickerConfig = serde_saphyr::from_str(text).map_err(|e| {
            vec![ConfigError {
                field: DOCUMENT.into(),
                message: format!("not a valid EndpointPickerConfig: {e}"),
            }]
        })?;
        let errors = config.structural_errors();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// The plugin instance named `name`.
    pub fn plugin(&self, name: &str) -> Option<&PluginSpec> {
        self.plugins.iter().find(|p| p.instance_name() == name)
    }

    fn structural_errors(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut error =
            |field: String, message: String| errors.push(ConfigError { field, message });
        if !ACCEPTED_API_VERSIONS.contains(&self.api_version.as_str()) {
            error(
                "apiVersion".into(),
                format!(
                    "{:?} is not supported; use one of {}",
                    self.api_version,
                    ACCEPTED_API_VERSIONS.join(", ")
                ),
            );
        }
        if self.kind != KIND {
            error("kind".into(), format!("{:?} must be {KIND}", self.kind));
        }
        for (i, plugin) in self.plugins.iter().enumerate() {
            if plugin.type_.is_empty() {
                error(format!("plugins[{i}].type"), "must not be empty".into());
            }
            let name = plugin.instance_name();
            if self.plugins[..i].iter().any(|p| p.instance_name() == name) {
                error(
                    format!("plugins[{i}].name"),
                    format!("plugin name {name:?} is used twice"),
                );
            }
        }
        if self.scheduling_profiles.is_empty() {
            error(
                "schedulingProfiles".into(),
                "at least one profile is required".into(),
            );
        }
        for (i, profile) in self.scheduling_profiles.iter().enumerate() {
            if self.scheduling_profiles[..i]
                .iter()
                .any(|p| p.name == profile.name)
            {
                error(
                    format!("schedulingProfiles[{i}].name"),
                    format!("profile name {:?} is used twice", profile.name),
                );
            }
            for (j, reference) in profile.plugins.iter().enumerate() {
                let field = format!("schedulingProfiles[{i}].plugins[{j}]");
                if self.plugin(&reference.plugin_ref).is_none() {
                    error(
                        format!("{field}.pluginRef"),
                        format!(
                            "{:?} names no plugin declared under plugins",
                            reference.plugin_ref
                        ),
                    );
                }
                if let Some(weight) = reference.weight
                    && !(weight.is_finite() && weight >= 0.0)
                {
                    error(
                        format!("{field}.weight"),
                        format!("{weight} must be a finite number ≥ 0"),
                    );
                }
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- name: prefix
  type: prefix-cache-scorer
  parameters: {blockSize: 64}
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: prefix, weight: 3}
  - pluginRef: max-score-picker
"#;

    #[test]
    fn parses_gaie_config() {
        let config = EndpointPickerConfig::parse(GOOD).unwrap();
        assert_eq!(config.plugins[0].instance_name(), "prefix");
        assert_eq!(config.plugins[1].instance_name(), "max-score-picker");
        assert_eq!(config.scheduling_profiles[0].plugins[0].weight, Some(3.0));
    }

    #[test]
    fn accepts_llm_d_group() {
        let text = GOOD.replace("inference.networking.x-k8s.io", "llm-d.ai");
        assert!(EndpointPickerConfig::parse(&text).is_ok());
    }

    #[test]
    fn reports_every_structural_error() {
        let text = GOOD
            .replace("kind: EndpointPickerConfig", "kind: Other")
            .replace("pluginRef: max-score-picker", "pluginRef: missing")
            .replace("weight: 3", "weight: -1");
        let errors = EndpointPickerConfig::parse(&text).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "kind",
                "schedulingProfiles[0].plugins[0].weight",
                "schedulingProfiles[0].plugins[1].pluginRef"
            ]
        );
        assert!(errors[2].message.contains("\"missing\""));
    }

    #[test]
    fn rejects_unknown_fields_and_bad_yaml() {
        let errors = EndpointPickerConfig::parse(&format!("{GOOD}\nbogus: 1\n")).unwrap_err();
        assert!(errors[0].message.contains("bogus"), "{errors:?}");
        assert!(EndpointPickerConfig::parse("plugins: [").is_err());
    }
}
