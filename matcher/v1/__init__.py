"""Generated code for matcher.v1 (``make proto``; never edit by hand)."""
