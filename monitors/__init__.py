"""Social listeners: one adapter per platform, a common poll loop, triage."""
