"""Live scoring, as stages with one job each (see pipeline.py for the picture):

sources (camera, file, folder, URL) -> reader (capture thread, reconnect policy) -> preparer (--res, model
crop) -> scorer (batched async inference, shared by every source, results in order) -> decider
(smoothing + threshold, per source) -> sinks (events file, window, saved video; a web view or MQTT
later). Window keys and other requests reach the loop as commands (messages.py).
"""
