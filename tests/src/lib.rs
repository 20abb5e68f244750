//! Test peers for offpath's end-to-end tests: a fake Datadog intake, a fake Lambda Runtime API,
//! the CloudWatch Logs emulator (moto) harness and its Secrets Manager set-up, and helpers to run the
//! real binaries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cloudwatch;
pub mod fake_intake;
pub mod lambda_runtime;
pub mod lambda_sandbox;
pub mod metadata;
pub mod secrets_manager;
pub mod support;
