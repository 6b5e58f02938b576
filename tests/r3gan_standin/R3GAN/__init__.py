"""A stand-in for R3GAN's code base: only the interface ganfast.patch_stylegan() touches."""
