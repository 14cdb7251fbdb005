"""Widgets and screens of the Textual app (moviechat_tui.app puts them together)."""
