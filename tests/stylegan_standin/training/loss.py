"""Stand-in loss module that binds ops by name (the patch must rebind these too)."""
from torch_utils.ops.bias_act import bias_act  # noqa: F401
from torch_utils.ops.upfirdn2d import upfirdn2d as fir  # noqa: F401
