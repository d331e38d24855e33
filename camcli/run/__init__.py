"""The run layer: what a command opens and drives (a session, the pipeline, the batch and
its engines, the pictures written, training). It joins compute to records and storage."""
