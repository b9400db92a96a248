"""`ovdoc serve`: score pictures over HTTP — one box on aiohttp, or a Ray Serve application.

    inputs.py    request bodies (raw bytes, multipart, JSON batch of base64) -> decoded images, with limits
    bundles.py   a served bundle: its Detector, per-image results (score, box, map PNG), hot reload
    batching.py  concurrent requests -> one model batch, in a worker thread (the event loop never blocks)
    metrics.py   Prometheus text: requests, latency and batch-size histograms, errors, per bundle
    openapi.py   the OpenAPI description served at /openapi.json
    app.py       the one-box aiohttp server
    ray_app.py   the same API as a Ray Serve application (imports ray lazily)

Both front ends share inputs.py and bundles.py, so they answer the same request the same way.
"""
