"""In-memory views of artifacts for models: split arrays, user histories, item modalities."""

from mmiris.data.modality import ItemModality, load_modality
from mmiris.data.split import SplitData, UserHistory, load_split

__all__ = ["ItemModality", "SplitData", "UserHistory", "load_modality", "load_split"]
