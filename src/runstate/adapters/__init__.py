"""Store adapters: in-memory, SQLite and PostgreSQL."""
