"""Live scoring, as stages with one job each (see loop.py for the picture):

sources (camera, file, folder, URL) -> reader (capture thread, reconnect policy) -> preparer (--res, model
crop) -> scorer (batched async inference, shared by every source, results in order, post-processed into
scores, maps and boxes) -> decider (smoothing + the camera's threshold, per source) -> sinks (events file,
window, saved video, web view, MQTT, webhook, OPC UA; then the loop's own: flag-rate watch, episodes).
Window keys and other requests reach the loop as commands (messages.py).
"""
