//! micro-config
