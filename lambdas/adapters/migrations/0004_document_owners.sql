-- Who wrote each document. Writing and deleting documents need the `documents:write` scope (or admin),
-- so a chat user cannot plant text that colleagues' answers then quote; the rows say who created a
-- document and who last replaced it. Rows from before this migration have no recorded writer.
ALTER TABLE documents ADD COLUMN IF NOT EXISTS created_by text;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS updated_by text;
