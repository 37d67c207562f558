"""Network builders, registered by name (``model.network`` in the config)."""

from medseg.networks.planar import NETWORKS_2D, build_network_2d
from medseg.networks.volumetric import NETWORKS_3D, build_network_3d

__all__ = ["NETWORKS_2D", "NETWORKS_3D", "build_network_2d", "build_network_3d"]
