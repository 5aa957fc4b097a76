//! placeholder
pub mod strategy;
