"""wetok: a WeTok image codec and tokenizer toolkit."""

from wetok.config import PRESETS, TokenizerConfig
from wetok.quantizer import GroupedLFQ, codes_to_indices, indices_to_codes
from wetok.tokenizer import Tokenizer, TokenizerOutput

__version__ = "0.1.0"
__all__ = ["PRESETS", "GroupedLFQ", "Tokenizer", "TokenizerConfig", "TokenizerOutput", "codes_to_indices",
           "indices_to_codes", "__version__"]
