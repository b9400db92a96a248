"""A real RTSP server for the stream tests: Debian's GStreamer RTSP server (gir1.2-gst-rtsp-server-1.0 with
python3-gi), run under Debian's /usr/bin/python3 as a subprocess of the tests (the project's venv has no
GObject bindings, and needs none: only this helper speaks GStreamer).

    /usr/bin/python3 tests/_rtsp_server.py FRAMES_PATTERN PORT [FPS]

serves the JPEG files FRAMES_PATTERN (e.g. /tmp/x/%03d.jpg), looped, as H.264 at FPS on
rtsp://127.0.0.1:PORT/cam. It prints `READY` once listening and `CLIENT` each time a client connects;
stdin lines control it: `stall` (the connection stays up, no more video is sent), `resume`, `quit`.
"""

from __future__ import annotations

import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402 (versions must be required first)


def main() -> None:
    pattern, port = sys.argv[1], sys.argv[2]
    fps = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    Gst.init(None)
    loop = GLib.MainLoop()
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        # identity sync=true paces the looped files in real time, like a camera: while `stall` drops frames
        # at the valve the clock runs on, so video resumes at once afterwards
        f'( multifilesrc location="{pattern}" loop=true caps="image/jpeg,framerate={fps}/1" ! jpegdec '
        "! identity sync=true ! videoconvert ! video/x-raw,format=I420 ! valve name=gate drop=false "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)  # one pipeline: `stall` reaches every client
    medias: list = []
    factory.connect("media-configure", lambda _f, media: medias.append(media))
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on 127.0.0.1:{port}", flush=True)
        sys.exit(1)

    def client_connected(_server, _client) -> None:
        print("CLIENT", flush=True)

    server.connect("client-connected", client_connected)

    def set_drop(drop: bool) -> bool:
        for media in medias:
            gate = media.get_element().get_by_name("gate")
            if gate is not None:
                gate.set_property("drop", drop)
        print("STALLED" if drop else "RESUMED", flush=True)
        return False

    def control() -> None:
        for line in sys.stdin:
            command = line.strip()
            if command in ("stall", "resume"):
                GLib.idle_add(set_drop, command == "stall")
            elif command == "quit":
                break
        GLib.idle_add(loop.quit)  # stdin closed (the test ended or died): stop too

    threading.Thread(target=control, daemon=True).start()
    print("READY", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
