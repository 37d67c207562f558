"""Self-supervised pretraining of the Swin UNETR encoder (Tang et al., CVPR 2022) and its transfer."""
