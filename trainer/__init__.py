"""The engine room of a run: config, distributed engine, task loop, evaluation, results."""
