"""Test RTSP server (GStreamer's gst-rtsp-server via Debian's python3-gi), run with the system python3.

Usage: /usr/bin/python3 rtsp_server.py PORT [--width W --height H --fps N] [--paths live,cam2,...] [--pattern P]
                                      [--audio aac|pcmu]
Serves rtsp://127.0.0.1:PORT/live (and each of --paths: a camera each): a live test pattern, H.264, one keyframe
a second; with --audio, a tone too (AAC at 48 kHz, or G.711 mu-law at 8 kHz as many IP cameras send it). Binds
127.0.0.1 only. Prints "ready" once listening; stops on SIGTERM/SIGINT.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--paths", default="live", help="comma-separated mount points, one camera each")
    p.add_argument("--pattern", default="ball", help="videotestsrc pattern (snow: a picture no encoder shrinks)")
    p.add_argument("--audio", choices=["aac", "pcmu"], help="send a tone too")
    args = p.parse_args()
    audio = {None: "",
             "aac": " audiotestsrc is-live=true ! audio/x-raw,rate=48000,channels=1 ! audioconvert ! avenc_aac "
                    "! rtpmp4gpay name=pay1 pt=97",
             "pcmu": " audiotestsrc is-live=true ! audio/x-raw,rate=8000,channels=1 ! mulawenc "
                     "! rtppcmupay name=pay1"}[args.audio]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    for path in args.paths.split(","):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            f"( videotestsrc is-live=true pattern={args.pattern} ! video/x-raw,width={args.width},height={args.height},"
            f"framerate={args.fps}/1 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} "
            f"! rtph264pay name=pay0 pt=96 config-interval=1{audio} )")
        factory.set_shared(True)
        server.get_mount_points().add_factory(f"/{path}", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
