-- Up Migration
-- Account deletion (issue 7): a user being deleted is marked first. From that moment their sessions stop
-- resolving and sign-ins are refused, while the deleteAccount workflow removes their containers,
-- snapshots, files and hosts; the row itself goes last (ON DELETE CASCADE takes sessions, invites,
-- runtimes, snapshots rows and the rest). A deletion that fails leaves the mark, never a half-signed-in user.
ALTER TABLE users ADD COLUMN deleting_at timestamptz;

-- Down Migration
ALTER TABLE users DROP COLUMN deleting_at;
