"""Sensor front end: calibration profiles, demosaicing and radiometry."""
