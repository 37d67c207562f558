"""Network builders, registered by name (``model.network`` in the config)."""

from medseg.networks.volumetric import NETWORKS_3D, build_network_3d

__all__ = ["NETWORKS_3D", "build_network_3d"]
