"""The Streamlit page (`moviechat-tui web`): the same engine and database as the TUI, in a browser."""
