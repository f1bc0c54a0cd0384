-- Events: an inline object's object_created event shares its ciphertext with the object row (bytes, not hex in JSON)
-- object_n: the object row whose inline content is this event's ciphertext, while it is unchanged;
-- content: that ciphertext, copied here before the row's content changes or the row goes.
-- Older events keep their hex in the payload, and streams read both (telentir/streaming/feed.py).
ALTER TABLE events ADD COLUMN object_n INTEGER;
ALTER TABLE events ADD COLUMN content BLOB;
CREATE INDEX events_object ON events(object_n) WHERE object_n IS NOT NULL;
