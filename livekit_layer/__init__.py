"""The LiveKit layer: the only code besides `agent.py` that imports livekit. It binds one
person's conversation with one companion to an `AgentSession`: turn context, spoken-turn
prefetch, companion hand-off, screening of chat contexts."""
