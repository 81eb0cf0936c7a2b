//! Prometheus metrics: not written yet.
