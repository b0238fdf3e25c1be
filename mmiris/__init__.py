"""mmiris: Multimodal IRIS recommender and the data system around it."""

__version__ = "0.1.0"
