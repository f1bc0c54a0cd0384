"""Where state lives: SQLite metadata (`db`) and ciphertext files (`blobs`)."""
