"""Alerts: a state machine per (target, check), a persisted outbox, and one module per channel."""
