//! Label filters: `by-label` {label, validValues, allowsNoLabel} (llm-d) and the role filters
//! `prefill-filter` / `decode-filter` on FusionInfer's component-type label.

use std::collections::BTreeSet;
use std::sync::Arc;

use fusioninfer_api::ComponentType;
use fusioninfer_api::labels::COMPONENT_TYPE;
use serde::Deserialize;

use crate::endpoint::Endpoint;
use crate::error::PluginError;
use crate::framework::{CycleState, Filter, Plugin};
use crate::plugins::NoParameters;
use crate::registry::Registry;
use crate::request::Request;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ByLabelParameters {
    label: String,
    #[serde(default)]
    valid_values: Vec<String>,
    #[serde(default)]
    allows_no_label: bool,
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register("by-label", |c| {
        let p: ByLabelParameters = c.parameters()?;
        if p.label.is_empty() {
            return Err(PluginError::bad_parameter("label", "must not be empty"));
        }
        if p.valid_values.is_empty() && !p.allows_no_label {
            return Err(PluginError::bad_parameter(
                "validValues",
                "must list at least one value (or set allowsNoLabel)",
            ));
        }
        Ok(Arc::new(ByLabel::new(
            p.label,
            p.valid_values,
            p.allows_no_label,
        )))
    });
    registry.register("prefill-filter", |c| {
        c.parameters::<NoParameters>()?;
        Ok(Arc::new(ByLabel::prefill_role()))
    });
    registry.register("decode-filter", |c| {
        c.parameters::<NoParameters>()?;
        Ok(Arc::new(ByLabel::decode_role()))
    });
}

/// Keeps endpoints whose label has one of the valid values (or, optionally, no such label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByLabel {
    label: String,
    valid_values: BTreeSet<String>,
    allows_no_label: bool,
}

impl ByLabel {
    /// Keeps endpoints with `label` in `valid_values`, and those without `label` when
    /// `allows_no_label`.
    pub fn new(
        label: impl Into<String>,
        valid_values: impl IntoIterator<Item = String>,
        allows_no_label: bool,
    ) -> Self {
        ByLabel {
            label: label.into(),
            valid_values: valid_values.into_iter().collect(),
            allows_no_label,
        }
    }

    /// Endpoints that can prefill: prefillers and monolithic workers.
    pub fn prefill_role() -> Self {
        let values =
            [ComponentType::Prefiller, ComponentType::Worker].map(|c| c.as_str().to_owned());
        ByLabel::new(COMPONENT_TYPE, values, false)
    }

    /// Endpoints that can decode: decoders, monolithic workers and unlabelled pods (as llm-d's
    /// decode filter, so a plain pool still works).
    pub fn decode_role() -> Self {
        let values = [ComponentType::Decoder, ComponentType::Worker].map(|c| c.as_str().to_owned());
        ByLabel::new(COMPONENT_TYPE, values, true)
    }

    /// Whether `endpoint` passes.
    pub fn accepts(&self, endpoint: &Endpoint) -> bool {
        match endpoint.label(&self.label) {
            Some(value) => self.valid_values.contains(value),
            None => self.allows_no_label,
        }
    }
}

impl Plugin for ByLabel {
    fn as_filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
}

impl Filter for ByLabel {
    fn filter(&self, _: &Request, _: &mut CycleState, candidates: &mut Vec<&Endpoint>) {
        candidates.retain(|endpoint| self.accepts(endpoint));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(role: Option<&str>) -> Endpoint {
        let endpoint = Endpoint::new("10.0.0.1:8000".parse().unwrap());
        match role {
            Some(role) => endpoint.with_label(COMPONENT_TYPE, role),
            None => endpoint,
        }
    }

    #[test]
    fn role_filters_use_fusioninfer_component_types() {
        let prefill = ByLabel::prefill_role();
        let decode = ByLabel::decode_role();
        let accepted = |filter: &ByLabel| {
            [
                Some("prefiller"),
                Some("decoder"),
                Some("worker"),
                Some("router"),
                None,
            ]
            .map(|role| filter.accepts(&endpoint(role)))
        };
        assert_eq!(accepted(&prefill), [true, false, true, false, false]);
        assert_eq!(accepted(&decode), [false, true, true, false, true]);
    }
}
