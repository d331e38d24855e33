"""The analysis layer: what a map or a run's records say (where a map points, faithfulness
metrics, ``score``, ``audit``, the report). It needs no model: no TensorFlow, nothing of
`camcli.compute`."""
