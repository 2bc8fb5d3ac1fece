"""Smart locker banks: CU16 board bus, compartment state machine, offline pickup codes.

`edge.locker.driver` is the `cu16` driver; its simulated twin `sim-cu16` lives in
simulators/drivers/cu16.py.
"""
