SELECT count(DISTINCT code) FROM import_rows
