"""autoprompt_search: discrete prompt search for frozen language models."""

__version__ = "0.1.0"
