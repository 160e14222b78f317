//! micro-server
