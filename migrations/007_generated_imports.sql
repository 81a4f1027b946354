-- Codes the service generates (GenerateCodes) land as an import of format
-- 'generated': all or nothing, with an import id, voidable as a whole.
ALTER TABLE imports DROP CONSTRAINT imports_format_check;
ALTER TABLE imports ADD CONSTRAINT imports_format_check CHECK (format IN ('lines', 'csv', 'generated'));
