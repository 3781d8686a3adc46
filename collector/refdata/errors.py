"""The reference data's exceptions, apart so that ``store`` (raises ``RefDataError``) and ``importer``
(raises both) share them without importing each other in a cycle."""

from __future__ import annotations

__all__ = ["ImportValidationError", "RefDataError"]


class RefDataError(Exception):
    """Reference data cannot be opened, read or written as asked."""


class ImportValidationError(RefDataError, ValueError):
    """A file (or data set) was refused as a whole; names the table, the row and why.

    ``row`` is the 1-based position of the row in its table's list (JSON) or among the data lines of a
    CSV file (line ``row + 1``); ``None`` for whole-file problems, or with ``existing_id`` for a row
    already in the database that the import would break (``replace``)."""

    def __init__(self, table: str, row: int | None, reason: str, *, source: str = "",
                 existing_id: int | None = None) -> None:
        self.table = table
        self.row = row
        self.reason = reason
        self.source = source
        self.existing_id = existing_id
        super().__init__(self._message())

    def _message(self) -> str:
        where = [self.source] if self.source else []
        if self.table and self.row is not None:
            where.append(f"{self.table} row {self.row}")
        elif self.table and self.existing_id is not None:
            where.append(f"{self.table} id {self.existing_id} (already in the database)")
        elif self.table:
            where.append(self.table)
        return ": ".join([*where, self.reason])

