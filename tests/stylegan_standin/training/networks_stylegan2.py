"""Stand-in for StyleGAN3's copy of the StyleGAN2 networks: it imports modulated_conv2d by name."""
from training.networks import modulated_conv2d  # noqa: F401
