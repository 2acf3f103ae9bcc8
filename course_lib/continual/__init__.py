"""Continual learning and incremental training (chapter 3).

Modules, one concept each:

* :mod:`.scenarios`: Split-Digits and Split-ShapeWorld in the task-, domain- and
  class-incremental scenarios.
* :mod:`.models`: van de Ven's MLP, a small CNN, progressive networks.
* :mod:`.buffers`: reservoir and class-balanced replay memories.
* :mod:`.regularization`: Fisher diagonal, EWC penalties, distillation loss.
* :mod:`.strategies`: the training loop with hooks and the strategies (fine-tuning,
  joint, replay, EWC / online EWC, LwF, progressive networks).
* :mod:`.metrics`: accuracy-matrix metrics (average accuracy, forgetting, BWT, FWT).
* :mod:`.analysis`: why forgetting happens (weight drift, CKA, subspace overlap, output bias).
* :mod:`.experiments`: the Split-Digits comparison, its protocols and tables.
* :mod:`.selection`: the measured selection guide (strategy per scenario and memory budget).
* :mod:`.report`: the chapter guide's tables, rendered from the committed results files.
* :mod:`.clip_incremental`: teaching the tiny CLIP new colours and shapes.
* :mod:`.feedback_store`, :mod:`.online`, :mod:`.service`, :mod:`.client`: the online
  learning HTTP service and its drivers.
"""

from .analysis import linear_cka, output_bias, subspace_overlap, weight_drift
from .buffers import ClassBalancedBuffer, ReservoirBuffer
from .metrics import average_accuracy_curve, continual_metrics
from .models import MLP, ProgressiveNet, SmallCNN, build_model, mlp, small_cnn
from .regularization import EWCPenalty, distillation_loss, fisher_diagonal
from .scenarios import Experience, Scenario, split_digits_scenario, split_shapeworld_scenario
from .strategies import (
    EWC,
    STRATEGIES,
    Batch,
    ContinualLearner,
    ContinualResult,
    Joint,
    LwF,
    Naive,
    Progressive,
    Replay,
    Strategy,
    TrainConfig,
)

__all__ = [
    "EWC", "MLP", "STRATEGIES", "Batch", "ClassBalancedBuffer", "ContinualLearner", "ContinualResult",
    "EWCPenalty", "Experience", "Joint", "LwF", "Naive", "Progressive", "ProgressiveNet", "Replay",
    "ReservoirBuffer", "Scenario", "SmallCNN", "Strategy", "TrainConfig", "average_accuracy_curve",
    "build_model", "continual_metrics", "distillation_loss", "fisher_diagonal", "linear_cka", "mlp",
    "output_bias", "small_cnn", "split_digits_scenario", "split_shapeworld_scenario", "subspace_overlap",
    "weight_drift",
]
