"""The records layer: the manifest, what a run recorded (one writer, one reader). It reads
and writes through `camcli.io` and knows no model."""
