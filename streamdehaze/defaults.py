"""Defaults that the command line, the API, configurations and the GStreamer element share, in a module that loads
nothing heavy: GStreamer imports the element (and so this) whenever it scans its plugins or builds a pipeline."""

TEMPORAL_STRENGTH = 0.8  # weight of the past in flicker smoothing (--temporal-strength)
