"""Who talks and with whom: users, their companions, onboarding, conversations and
continuity between them."""
