//! The session engine (stub, being written).
