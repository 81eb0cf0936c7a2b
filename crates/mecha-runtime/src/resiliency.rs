//! Resiliency policies (`kind: Resiliency`): not written yet.
