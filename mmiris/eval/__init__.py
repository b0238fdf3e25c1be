"""Evaluation: ranking metrics (eq. 13–14) and the sampled / full-ranking protocols."""

from mmiris.eval.metrics import KS, metric_sums, metrics_from_ranks, positive_ranks
from mmiris.eval.protocols import RankResult, full_ranks, sampled_ranks

__all__ = ["KS", "RankResult", "full_ranks", "metric_sums", "metrics_from_ranks", "positive_ranks", "sampled_ranks"]
