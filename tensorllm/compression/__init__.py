"""Compression to a size the user names: per-layer ranks allocated by measured sensitivity.

``tensorllm.compress(model, target_ratio=R, out=DIR)`` (:mod:`.api`) measures every layer's edits
(:mod:`.sensitivity`, :mod:`.plan`), solves the multiple-choice knapsack (:mod:`.allocate`), exports the factorised
model and verifies it against the base (:mod:`.verify`); :mod:`.grid` resolves rank grids to each model.
"""

from .allocate import Allocation, allocate
from .api import compress
from .grid import DEFAULT_GRID, LayerOption, layer_options
from .plan import Plan, SensitivityTable, measure, plan, uniform_cells
from .report import CompressReport

__all__ = ["Allocation", "CompressReport", "DEFAULT_GRID", "LayerOption", "Plan", "SensitivityTable", "allocate",
           "compress", "layer_options", "measure", "plan", "uniform_cells"]
