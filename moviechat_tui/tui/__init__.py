"""Widgets and screens of the Textual app (moviechat_tui.tui.app puts them together)."""
