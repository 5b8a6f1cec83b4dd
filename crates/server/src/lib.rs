//! HTTP API and dashboard.
