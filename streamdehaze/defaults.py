"""Defaults that the command line, the API, configurations and the GStreamer element share, in a module that loads
nothing heavy: GStreamer imports the element (and so this) whenever it scans its plugins or builds a pipeline."""

# The command line's choices, here so that it answers --help and usage errors before torch loads (about 3 s).
MODEL_NAMES = ("auto", "dcp", "kanet", "kanet-w256", "kanet-s", "kanet-t")  # --model (kanet's: kanet.MODEL_NAMES)
HWACCEL_MODES = ("auto", "none", "cuda")  # --hwaccel
TEMPORAL_MODES = ("off", "ema", "static")  # --temporal: none; the average that follows the camera; the same without the flow
TEMPORAL_STRENGTH = 0.8  # weight of the past in flicker smoothing (--temporal-strength)
STILL_LONGER = 4  # a camera found still averages this many times longer (its coefficients wobble with noise only)
