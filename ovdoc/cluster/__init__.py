"""ovdoc on a Ray cluster (`pip install 'ovdoc[cluster]'`): big image sets (`fit/eval --ray`) and a line of
cameras spread over several boxes (`run --config line.yaml --ray`). Ray is imported only here, and only
when `--ray` is given: the one-box path and the board's runtime-only install never load it."""
