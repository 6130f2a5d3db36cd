"""Training for KA_Net: haze synthesis, synthetic clips, losses, sample reweighting, the trainer and metrics.

Imports ``kanet``; never imports ``streamdehaze``'s I/O. See docs/training.md.
"""
