"""Use cases. Each takes its collaborators (database engine, ports, settings) explicitly."""
