"""How a companion feels and acts on its own: PAD mood, Big Five, needs, quirks, proactive
decisions and silence nudges."""
