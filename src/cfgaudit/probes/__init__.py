"""Event sources: trace files (replay) and, later, live bcc backends, behind one table."""
