//! Plugin types by name. A configuration's `plugins[].type` is looked up here and the factory
//! builds the instance from its `parameters`. Other crates add their own types with
//! [`Registry::register`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::{ConfigError, PluginError};
use crate::framework::Plugin;

/// Builds a plugin instance from its context (name and parameters).
pub type PluginFactory =
    Arc<dyn Fn(&PluginContext<'_>) -> Result<Arc<dyn Plugin>, PluginError> + Send + Sync>;

/// Plugin factories keyed by plugin type name.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, PluginFactory>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// A registry with no plugin types.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// A registry with every built-in plugin type (see [`crate::plugins`]).
    pub fn with_builtins() -> Self {
        let mut registry = Registry::empty();
        crate::plugins::register_builtins(&mut registry);
        registry
    }

    /// Registers `factory` for `type_name`, replacing and returning any earlier factory of
    /// that name.
    pub fn register<F>(&mut self, type_name: impl Into<String>, factory: F) -> Option<PluginFactory>
    where
        F: Fn(&PluginContext<'_>) -> Result<Arc<dyn Plugin>, PluginError> + Send + Sync + 'static,
    {
        self.factories.insert(type_name.into(), Arc::new(factory))
    }

    /// Whether `type_name` is registered.
    pub fn contains(&self, type_name: &str) -> bool {
        self.factories.contains_key(type_name)
    }

    /// Registered type names, sorted.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    pub(crate) fn factory(&self, type_name: &str) -> Option<&PluginFactory> {
        self.factories.get(type_name)
    }
}

/// Looks up other plugin instances of the same configuration while one is being built.
pub(crate) trait PluginResolver {
    /// The instance named `name`, built on demand; `None` if the config declares none.
    fn resolve(&self, name: &str) -> Result<Option<Arc<dyn Plugin>>, ConfigError>;
    /// The type of the instance named `name`.
    fn type_of(&self, name: &str) -> Option<&str>;
}

/// What a factory gets: the instance's name and parameters, and access to the other plugins.
pub struct PluginContext<'a> {
    pub(crate) name: &'a str,
    pub(crate) type_name: &'a str,
    pub(crate) parameters: Option<&'a serde_json::Value>,
    pub(crate) resolver: &'a dyn PluginResolver,
}

impl<'a> PluginContext<'a> {
    /// The instance name (`name`, else `type`).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The plugin type.
    pub fn type_name(&self) -> &'a str {
        self.type_name
    }

    /// The raw parameters, if any.
    pub fn raw_parameters(&self) -> Option<&'a serde_json::Value> {
        self.parameters
    }

    /// Deserializes the parameters (absent parameters read as `{}`); an error names the
    /// offending parameter. Give `T` `#[serde(deny_unknown_fields)]` so that typos fail.
    pub fn parameters<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        let empty = serde_json::Value::Object(serde_json::Map::new());
        let value = match self.parameters {
            None | Some(serde_json::Value::Null) => &empty,
            Some(value) => value,
        };
        serde_path_to_error::deserialize(value).map_err(|error| {
            let path = error.path().to_string();
            let message = error.into_inner().to_string();
            let parameter = if path == "." {
                // serde names unknown and missing fields only in the message: "unknown field `x`".
                message.split('`').nth(1).unwrap_or("parameters").to_owned()
            } else {
                path
            };
            PluginError::bad_parameter(parameter, message)
        })
    }

    /// The plugin instance named `name` in the same configuration (built first if needed);
    /// `None` if the configuration declares no such plugin.
    pub fn plugin(&self, name: &str) -> Result<Option<Arc<dyn Plugin>>, PluginError> {
        self.resolver
            .resolve(name)
            .map_err(|e| PluginError::Dependency(Box::new(e)))
    }

    /// The type of the plugin instance named `name`, if declared.
    pub fn plugin_type(&self, name: &str) -> Option<&str> {
        self.resolver.type_of(name)
    }
}
