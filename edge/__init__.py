"""The edge daemon of a store node: drivers, presence logic, durable outbox, MQTT uplink.

Runs on a Raspberry Pi with `storegate[edge]` only: nothing here may import a cloud-only
dependency (tests/test_packaging.py checks it).
"""
