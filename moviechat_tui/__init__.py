"""moviechat: a terminal-first chatbot that talks like movie characters."""

__version__ = "0.1.0"
