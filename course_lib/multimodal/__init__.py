"""Chapter 2, multimodal fusion (多模态融合): alignment losses, optimal transport,
retrieval and FAISS indexes, cross-attention, fusion architectures, task heads.

Modules:

* :mod:`.losses`: InfoNCE (CLIP), SigLIP, hard-negative InfoNCE, learnable temperature,
  alignment/uniformity/modality-gap diagnostics.
* :mod:`.contrastive`: LiT-style training of a text tower against the locked tiny-CLIP image tower.
* :mod:`.attention`: cross-modal multi-head attention, co-attention, attention heat maps.
* :mod:`.ot`: Sinkhorn in the log domain (stabilised), barycentric projection,
  Gromov-Wasserstein and Wasserstein-Procrustes alignment without pairs.
* :mod:`.retrieval`: exact cosine search, recall@K, mAP, FAISS indexes, a search widget.
* :mod:`.ann`: the million-vector recall-vs-speed study.
* :mod:`.features`: patch and word tokens of a frozen CLIP.
* :mod:`.fusion`: early / middle / late fusion for VQA, training, evaluation, the budgets.
* :mod:`.probes`: layer probes of patch tokens, the relation oracle, attention on named objects.
* :mod:`.heads`: image-text matching, captioning decoder, BLEU.
* :mod:`.advanced`: modality normalisation, gated and uncertainty-weighted fusion, corruption.
* :mod:`.studies`: seeded studies of notebooks 2.1-2.3 (alignment losses, retrieval, Sinkhorn
  speed) that write ``results/ch2_*.json``.
* :mod:`.fusion_studies`: seeded studies of notebooks 2.5-2.7 (fusion families, matching,
  advanced techniques), their results files and the chapter's selection guide.

``python -m course_lib.bench multimodal`` prints the chapter's measured tables.
"""

from .attention import CoAttentionLayer, CrossAttentionBlock, CrossModalAttention, attention_heatmap
from .losses import (
    ContrastiveLoss,
    alignment,
    clip_contrastive_loss,
    embedding_diagnostics,
    hard_negative_clip_loss,
    modality_gap,
    siglip_loss,
    uniformity,
)
from .ot import (
    SinkhornResult,
    barycentric_projection,
    cost_matrix,
    gromov_wasserstein_plan,
    matching_accuracy,
    procrustes,
    sinkhorn,
    sinkhorn_plan,
    uniform,
    wasserstein_procrustes,
)
from .retrieval import (
    INDEX_KINDS,
    Retriever,
    average_precision,
    build_index,
    cosine_topk,
    evaluate_directions,
    evaluate_retrieval,
    index_memory_bytes,
    mean_average_precision,
    neighbor_recall,
    recall_at_k,
    relevance_matrix,
    scene_keys,
    search,
    search_widget,
    set_search_params,
)

__all__ = [
    "INDEX_KINDS", "CoAttentionLayer", "ContrastiveLoss", "CrossAttentionBlock", "CrossModalAttention",
    "Retriever", "SinkhornResult", "alignment", "attention_heatmap", "average_precision",
    "barycentric_projection", "build_index", "clip_contrastive_loss", "cosine_topk", "cost_matrix",
    "embedding_diagnostics", "evaluate_directions", "evaluate_retrieval", "gromov_wasserstein_plan",
    "hard_negative_clip_loss", "index_memory_bytes", "matching_accuracy", "mean_average_precision",
    "modality_gap", "neighbor_recall", "procrustes", "recall_at_k", "relevance_matrix", "scene_keys",
    "search", "search_widget", "set_search_params", "siglip_loss", "sinkhorn", "sinkhorn_plan", "uniform",
    "uniformity", "wasserstein_procrustes",
]
