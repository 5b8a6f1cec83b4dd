//! Scenario XML model, parser and checker.
