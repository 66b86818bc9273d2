"""One module per CLI verb: its arguments and what it runs (``kdistill.cli`` parses and dispatches)."""
