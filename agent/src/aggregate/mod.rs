//! Contexts, 10 s buckets and sketches with Datadog Agent semantics: pure state plus a thin driver.
