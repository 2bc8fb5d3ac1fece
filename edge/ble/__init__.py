"""BLE beacons: frame decoders, the scanner driver and its watchdog, privacy, zone presence."""
