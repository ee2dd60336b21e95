"""MONAI Label: an app template serving volgan bundles, and the tasks it uses (``tasks`` imports ``monailabel``)."""
