"""Metrics: mode coverage for 2-D mixtures, Fréchet distance / FID, KID, precision/recall, density/coverage,
exact nearest neighbours by blocked matrix products."""
from .density_coverage import density_coverage
from .digits_classifier import DigitsClassifier, digits_extractor, digits_predictor
from .frechet import FeatureStats, feature_stats, frechet_distance, inception_extractor
from .kid import kernel_inception_distance
from .mixture import mixture_metrics
from .neighbours import ball_counts, knn_radii, nearest_neighbours
from .precision_recall import precision_recall

__all__ = ["DigitsClassifier", "FeatureStats", "ball_counts", "density_coverage", "digits_extractor",
           "digits_predictor", "feature_stats",
           "frechet_distance", "inception_extractor", "kernel_inception_distance", "knn_radii", "mixture_metrics",
           "nearest_neighbours", "precision_recall"]
