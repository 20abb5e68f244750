//! Lambda-only settings, read by the extension (and checked at load in every deployment).

use std::time::Duration;

use super::ConfigError;
use super::key::Reader;
use super::keys as k;
use super::values::FlushStrategy;

/// Lambda-only settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LambdaConfig {
    /// When to flush (`DD_SERVERLESS_FLUSH_STRATEGY`, `adaptive`).
    pub flush_strategy: FlushStrategy,
    /// Budget for a flush at the end of an invocation (`OFFPATH_LAMBDA_FLUSH_BUDGET_MS`, 200 ms).
    pub flush_budget: Duration,
    /// Port of the Telemetry API listener (`OFFPATH_LAMBDA_TELEMETRY_PORT`, 8999; 0 picks a free one).
    pub telemetry_port: u16,
    /// Host name in the Telemetry API destination (`OFFPATH_LAMBDA_TELEMETRY_HOST`, `sandbox.localdomain`).
    pub telemetry_host: String,
    /// Ship Datadog's enhanced metrics (`DD_ENHANCED_METRICS`, true).
    pub enhanced_metrics: bool,
    /// With them, the resource metrics from `/proc` and `/tmp` (`DD_LAMBDA_PROC_ENHANCED_METRICS`, true).
    pub proc_enhanced_metrics: bool,
    /// Port on 127.0.0.1 of the Datadog libraries' endpoints (`OFFPATH_LAMBDA_API_PORT`, 8124; 0 picks one).
    pub api_port: u16,
    /// Port on 127.0.0.1 of the trace intake that drops traces (`OFFPATH_LAMBDA_TRACE_PORT`, 8126).
    pub trace_port: u16,
}

impl LambdaConfig {
    pub(super) fn load(r: &Reader<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            flush_strategy: r.value(&k::SERVERLESS_FLUSH_STRATEGY)?,
            flush_budget: r.value(&k::LAMBDA_FLUSH_BUDGET)?,
            telemetry_port: r.value(&k::LAMBDA_TELEMETRY_PORT)?,
            telemetry_host: r.value(&k::LAMBDA_TELEMETRY_HOST)?,
            enhanced_metrics: r.value(&k::ENHANCED_METRICS)?,
            proc_enhanced_metrics: r.value(&k::LAMBDA_PROC_ENHANCED_METRICS)?,
            api_port: r.value(&k::LAMBDA_API_PORT)?,
            trace_port: r.value(&k::LAMBDA_TRACE_PORT)?,
        })
    }
}

impl FlushStrategy {
    /// Parse a `DD_SERVERLESS_FLUSH_STRATEGY` value (case and surrounding blanks ignored; empty is
    /// `adaptive`).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `DD_SERVERLESS_FLUSH_STRATEGY` and the accepted forms.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        k::SERVERLESS_FLUSH_STRATEGY.parse_value(value)
    }
}
