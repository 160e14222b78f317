//! micro-store
