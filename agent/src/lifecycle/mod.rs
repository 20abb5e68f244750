//! Signals, flush triggers and shutdown under a deadline.

pub mod status;
