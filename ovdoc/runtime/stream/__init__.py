"""Live scoring: frame sources, the capture/inference pipeline, display and event output."""
