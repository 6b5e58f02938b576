"""The thin training API: :class:`Trainer` over the functional steps in :mod:`ganfast.train.step`."""
from ..checkpoint import load_checkpoint, load_generator, save_checkpoint
from .step import d_step, ema_beta, ema_update, g_step
from .trainer import Trainer, TrainConfig

__all__ = ["TrainConfig", "Trainer", "d_step", "ema_beta", "ema_update", "g_step", "load_checkpoint",
           "load_generator", "save_checkpoint"]
