"""One module per CLI verb: its arguments and what it does (``kdistill.cli`` dispatches)."""
