"""Simulated shoppers whose phones advertise, heard through a fake bleak scanner backend."""
