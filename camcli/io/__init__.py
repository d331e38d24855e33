"""The I/O layer: every byte camcli reads or writes (storage back ends, atomic writes,
photos, input discovery, labels files, labelled tables). It knows no model and no record."""
