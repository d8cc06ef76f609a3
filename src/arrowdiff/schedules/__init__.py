"""Unified noise scheduling: discrete masking and continuous Gaussian schedules, timestep spacing (R11)."""

from arrowdiff.schedules.gaussian import GAUSSIAN_SCHEDULES, add_noise, get_gaussian_schedule
from arrowdiff.schedules.masking import (
    DISCRETE_SCHEDULES,
    get_mask_schedule,
    mask_tokens,
    nelbo_weight,
    validate_schedule,
)
from arrowdiff.schedules.spacing import SPACINGS, timesteps

__all__ = [
    "DISCRETE_SCHEDULES",
    "GAUSSIAN_SCHEDULES",
    "SPACINGS",
    "add_noise",
    "get_gaussian_schedule",
    "get_mask_schedule",
    "mask_tokens",
    "nelbo_weight",
    "timesteps",
    "validate_schedule",
]
