"""The core: dialogue format, model loading, generation backends, the SQLite store and the chat engine.

It never imports the interfaces (moviechat_tui.tui, moviechat_tui.cli, web/, trainer/).
"""
