"""Metrics: mode coverage for 2-D mixtures, Fréchet distance / FID, precision and recall."""
from .frechet import FeatureStats, feature_stats, frechet_distance, inception_extractor
from .digits_classifier import DigitsClassifier, digits_extractor, digits_predictor
from .mixture import mixture_metrics
from .precision_recall import precision_recall

__all__ = ["DigitsClassifier", "FeatureStats", "digits_extractor", "digits_predictor", "feature_stats",
           "frechet_distance", "inception_extractor", "mixture_metrics", "precision_recall"]
