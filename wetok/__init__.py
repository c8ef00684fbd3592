"""wetok: a WeTok image codec and tokenizer toolkit."""

from wetok.codec import Codec, compress, decompress, read_info
from wetok.config import PRESETS, TokenizerConfig
from wetok.format import ModelMismatchError, WtkFormatError
from wetok.quantizer import GroupedLFQ, codes_to_indices, indices_to_codes
from wetok.tokenizer import Tokenizer, TokenizerOutput
from wetok.zoo import load_codec

__version__ = "0.1.0"
__all__ = [
    "PRESETS",
    "Codec",
    "GroupedLFQ",
    "ModelMismatchError",
    "Tokenizer",
    "TokenizerConfig",
    "TokenizerOutput",
    "WtkFormatError",
    "__version__",
    "codes_to_indices",
    "compress",
    "decompress",
    "indices_to_codes",
    "load_codec",
    "read_info",
]
