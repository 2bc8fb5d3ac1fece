"""The cloud's HTTP API: health, metrics, and `/api/v1` with API-key auth."""
