"""ddnb: the executable edition of "What is Dataset Distillation Learning?" (Yang et al., ICML 2024).

Data flows one way: ``data -> distill -> store -> analysis -> notebook -> book``.
"""

__version__ = "0.1.0"

from ddnb.errors import DdnbError
from ddnb.memory import keep_freed_memory

keep_freed_memory()  # why: see ddnb/memory.py (the kernel zeroing freed pages cost 40 % of CPU time)

__all__ = ["DdnbError", "__version__"]
