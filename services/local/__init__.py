"""The local workspace: SQLite + files + real processes (the embedded default)."""
