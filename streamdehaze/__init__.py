"""streamdehaze: real-time video dehazing (files, live feeds, and an embeddable API)."""

__version__ = "0.1.0"
