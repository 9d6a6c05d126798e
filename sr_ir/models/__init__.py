"""Bundled example networks, built from code (nothing is downloaded)."""
