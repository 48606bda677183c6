"""Business logic by concern: memory, people, persona and safety. No livekit here; every
service takes its collaborators in its constructor (see `services/composition.py`)."""
