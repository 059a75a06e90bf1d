-- `sqlora feedback remove ID`: the answer stays on record but is no longer an example or a
-- training pair.
ALTER TABLE feedback ADD COLUMN removed_at TEXT;
