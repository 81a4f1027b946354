package migrations

// Files are the numbered migrations, for tests that migrate step by step.
var Files = files
