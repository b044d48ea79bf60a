"""The monitor's memory: a SQLite history of runs, states with a "since", and changes."""
