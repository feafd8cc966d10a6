"""Events: one record, one story per activity on a camera (`tracker`: pure transitions; `reservoir`:
the bounded frames for the story; `book`: both behind a lock for the running daemon)."""
