"""What guards a person and the companion: the injection screen, incidents, rate limits and
the memory quota."""
