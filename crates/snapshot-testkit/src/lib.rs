//! Dev-only test fixtures (being written).
