"""One router module per area of API v1."""
