"""Calibration of a bundle: temperature, operating points, the uncertain band and the per-domain report
(``python -m export.calibrate``)."""
