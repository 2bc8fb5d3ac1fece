"""The ingestor: MQTT in, validated and deduplicated state out, acks only after commit."""
