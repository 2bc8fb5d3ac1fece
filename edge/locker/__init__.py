"""Smart locker banks: CU16 board bus, compartment state machine, offline pickup codes.

The runtime loads `edge.locker.driver`, which registers the `cu16` and `sim-cu16` drivers.
"""
