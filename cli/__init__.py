"""The command modules of ``tollgate.py``: each ``register(add)`` adds its subcommands."""
