"""Attacks that must fail: each runs against real components and asserts the refusal."""
