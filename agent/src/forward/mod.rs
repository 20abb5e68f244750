//! Datadog HTTP transport, retry classification and backoff, byte-capped retry queue.
