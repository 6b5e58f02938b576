"""A tiny stand-in for a StyleGAN2-ADA-style code base (same module names), written for test_patch_stylegan."""
