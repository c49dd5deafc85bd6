"""The training engine shared by every task."""

from .config import Recipe, parse_overrides
from .recipes import RECIPES, get_recipe
from .trainer import Trainer, autocast_context, build_optimizer, lr_factor, param_groups, resolve_device

__all__ = ["RECIPES", "Recipe", "Trainer", "autocast_context", "build_optimizer", "get_recipe", "lr_factor",
           "param_groups", "parse_overrides", "resolve_device"]
