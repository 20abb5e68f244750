//! Wires the stages together with bounded channels.
