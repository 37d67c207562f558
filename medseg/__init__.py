"""medseg: 3D medical image segmentation on MONAI, from the command line."""

__version__ = "0.1.0"
