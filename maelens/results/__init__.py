"""Results: one versioned format for every analysis, with writers and readers."""
