"""wetok: a WeTok image codec and tokenizer toolkit.

The names below are imported on first use (PEP 562), so ``import wetok.config`` or ``wetok --help`` does
not load torch; ``from wetok import Codec`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Codec": "wetok.codec",
    "compress": "wetok.codec",
    "decompress": "wetok.codec",
    "read_info": "wetok.info",
    "PRESETS": "wetok.config",
    "TokenizerConfig": "wetok.config",
    "WetokError": "wetok.errors",
    "ModelMismatchError": "wetok.errors",
    "ModelNotFoundError": "wetok.errors",
    "WtkFormatError": "wetok.errors",
    "GroupedLFQ": "wetok.quantizer",
    "codes_to_indices": "wetok.quantizer",
    "indices_to_codes": "wetok.quantizer",
    "Tokenizer": "wetok.tokenizer",
    "TokenizerOutput": "wetok.tokenizer",
    "load_codec": "wetok.zoo",
}
__all__ = [
    "PRESETS",
    "Codec",
    "GroupedLFQ",
    "ModelMismatchError",
    "ModelNotFoundError",
    "Tokenizer",
    "TokenizerConfig",
    "TokenizerOutput",
    "WetokError",
    "WtkFormatError",
    "__version__",
    "codes_to_indices",
    "compress",
    "decompress",
    "indices_to_codes",
    "load_codec",
    "read_info",
]

if TYPE_CHECKING:
    from wetok.codec import Codec, compress, decompress
    from wetok.config import PRESETS, TokenizerConfig
    from wetok.errors import ModelMismatchError, ModelNotFoundError, WetokError, WtkFormatError
    from wetok.info import read_info
    from wetok.quantizer import GroupedLFQ, codes_to_indices, indices_to_codes
    from wetok.tokenizer import Tokenizer, TokenizerOutput
    from wetok.zoo import load_codec


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wetok' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
