"""The words of the injection frames, one module per language (en, es, de, fr).

Each entry is a regex fragment over the detector's `words` view: lower case, no diacritics
(written here with them for readability; `injection_patterns` folds them the same way the text
is folded), punctuation gone, sentence ends as " . ". The frames in `injection_patterns` are
the same in every language; only these words differ. A field a language leaves out is a frame
that language does not have.

What makes a request an attack is who it is aimed at: "your instructions", "the rules you were
given", "other users' memories". What keeps ordinary talk ordinary is the same: "the
instructions I gave you about my diet", "my rules", "the instructions on the medicine box".
"""
