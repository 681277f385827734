//! Providers (being written).
