//! Errors from turning an `EndpointPickerConfig` into a scheduler.

use fusioninfer_api::epp_config;

/// Why a configuration cannot become a scheduler. Every variant names the plugin, profile or
/// field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The config does not parse or its references do not resolve.
    #[error("invalid EndpointPickerConfig: {}", join(.0))]
    Invalid(Vec<epp_config::ConfigError>),
    /// A plugin's `type` is not registered.
    #[error("plugin {name:?}: unknown plugin type {type_name:?} (known types: {known})")]
    UnknownPluginType {
        /// Instance name.
        name: String,
        /// The unknown type.
        type_name: String,
        /// Registered types, comma-separated.
        known: String,
    },
    /// A plugin's parameters are wrong.
    #[error("plugin {name:?} (type {type_name:?}): parameter {parameter}: {message}")]
    BadParameter {
        /// Instance name.
        name: String,
        /// Plugin type.
        type_name: String,
        /// The parameter at fault (`parameters` when the problem is the whole object).
        parameter: String,
        /// What is wrong.
        message: String,
    },
    /// Plugins refer to each other in a loop.
    #[error("plugins refer to each other in a loop: {0}")]
    ReferenceCycle(String),
    /// A profile is not usable.
    #[error("scheduling profile {profile:?}: {message}")]
    Profile {
        /// Profile name.
        profile: String,
        /// What is wrong.
        message: String,
    },
    /// The profile handler is missing, duplicated or does not fit the profiles.
    #[error("profile handler: {0}")]
    ProfileHandler(String),
    /// `saturationDetector` is wrong.
    #[error("saturationDetector.{field}: {message}")]
    Saturation {
        /// The field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn join(errors: &[epp_config::ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error a plugin factory returns; the scheduler builder adds the plugin's name and type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    /// A parameter is missing, malformed or out of range.
    #[error("parameter {parameter}: {message}")]
    BadParameter {
        /// The parameter at fault.
        parameter: String,
        /// What is wrong.
        message: String,
    },
    /// Building a plugin this one refers to failed.
    #[error(transparent)]
    Dependency(Box<ConfigError>),
}

impl PluginError {
    /// A [`PluginError::BadParameter`].
    pub fn bad_parameter(parameter: impl Into<String>, message: impl Into<String>) -> Self {
        PluginError::BadParameter {
            parameter: parameter.into(),
            message: message.into(),
        }
    }
}
