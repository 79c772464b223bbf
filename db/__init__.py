"""The results database: SQLAlchemy schema, engine and sessions, migrations, ingest and
result queries. Never imports torch, so querying results starts fast."""
