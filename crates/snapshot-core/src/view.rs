//! The target view (stub, being written).
