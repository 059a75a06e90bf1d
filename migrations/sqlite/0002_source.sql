-- Where a record came from: the shell, `sqlora feedback record`, or an import.
ALTER TABLE feedback ADD COLUMN source TEXT NOT NULL DEFAULT 'shell';
