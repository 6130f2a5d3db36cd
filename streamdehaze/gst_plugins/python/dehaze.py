"""GStreamer's Python plugin loader imports this file from GST_PLUGIN_PATH/python (python -m streamdehaze.gst
--env sets that up); the element lives in the package."""

from gi.repository import Gst

from streamdehaze.gst_element import DehazeElement

__gstelementfactory__ = ("dehaze", Gst.Rank.NONE, DehazeElement)
