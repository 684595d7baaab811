"""Denoisers, upscalers and classifiers: networks and classical methods behind one base each."""
