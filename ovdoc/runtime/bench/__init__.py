"""`ovdoc bench`: speed and accuracy of a bundle across devices, precisions, batches, hints and scorers.

One module per job: `machine` describes the box, `measure` times things, `baselines` reproduces the loops
ovdoc replaces, `report` turns results into tables and charts. Nothing here imports TensorFlow at import
time; the Keras baseline imports it lazily and is skipped with a note when it is absent.
"""
