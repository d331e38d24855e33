"""The compute layer: images and targets in; maps, probabilities and ranks out (the
TensorFlow backend, models, methods, the explainer). It knows no records and no runs."""
