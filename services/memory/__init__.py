"""What the companion remembers: explicit and episodic memories, retrieval for a turn,
consolidation, the profile summary, retention and forgetting."""
