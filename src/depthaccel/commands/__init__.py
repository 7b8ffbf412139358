"""Sub-commands of the ``depthaccel`` command line (one module each; see ``depthaccel.cli``)."""
