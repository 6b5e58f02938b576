"""Triton kernels, one module per op. Imported lazily: ``import ganfast`` never imports triton."""
