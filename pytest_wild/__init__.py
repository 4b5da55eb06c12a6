"""pytest-wild: WILD evaluation of LLM knowledge edits as pytest tests.

This module stays import-light on purpose: pytest loads the plugin in every run of every
project that installs it, so nothing here may import torch or transformers.
"""

__version__ = "0.1.0"
