"""Reference affine_resample: StyleGAN2-ADA's geometric augmentation pass, the oracle of ganfast.ops.affine_resample.

    affine_resample(images, G_inv) = downsample2d(affine_sample(upsample2d(F.pad(images, margins, "reflect")), θ))
with the symlet-6 filter, the margins and θ of ``geometric_plan``: four torch calls with full-size intermediates.
The composition lives with the other augmentation stages in ganfast.reference.augment (``geometric``); this module
names it after the op.
"""
from .augment import geometric as affine_resample
from .augment import geometric_filter, geometric_plan

__all__ = ["affine_resample", "geometric_filter", "geometric_plan"]
