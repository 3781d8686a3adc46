"""Reference data: the model (MOR's names), the SQLite store, the validated importer, the lookup index."""
