//! Signals, flush triggers and shutdown under a deadline.
