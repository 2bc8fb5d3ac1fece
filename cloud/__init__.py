"""The cloud: ingestor, state store, time series, offers, lockers, API and dashboard."""
