"""The rules (R1–R12): what is allowed, decided in plain Python with no I/O, and the
errors a refusal carries."""
