"""Simulators: devices at their own protocol level, whole stores, and the demo."""
