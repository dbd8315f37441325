-- Every sync asks whether any project is recorded beyond upstream's serial
-- (`forget_serials_beyond`); without an index that reads every project row.
CREATE INDEX projects_serial ON projects(serial);
