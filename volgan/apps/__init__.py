"""What users run: the ``volgan`` command line, the demo, nnU-Net export and the MONAI Label app."""
