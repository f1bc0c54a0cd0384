-- Job leases: every open job names its owner process and that owner's last heartbeat
ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN heartbeat_at REAL;
