"""The grammar of the world before issue 15 (fixed frames per domain, the question copied into
each answer, phrase registers): tests of those features build it explicitly."""

FRAMES = {"answer_frames": "domain", "answer_object": "question", "answer_words": "phrases"}
