"""SQL persistence on SQLAlchemy 2 (async): SQLite for the embedded default, PostgreSQL in production."""
