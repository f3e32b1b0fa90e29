"""Simulated cameras: a factory registry generator now; fleets that publish alerts come with ingest."""
