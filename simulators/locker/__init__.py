"""A CU16 locker bank at the byte level, over a real pty or TCP, with people and faults."""
