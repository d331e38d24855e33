"""camcli: where does an image classifier look? Class-activation heatmaps from the command line.

The package is a library first; `camcli.cli` is a thin click layer over it. Importing
`camcli` is cheap: TensorFlow is imported only by the modules that run a model.
"""

__version__ = "0.1.0"
