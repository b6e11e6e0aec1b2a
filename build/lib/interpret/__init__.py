"""Where the model looked: a finished run's predictions asked again in transformers with the
exact input the server saw, the attention of the answer position (and of the vision encoder)
mapped onto the frames and split over regions known exactly (the cue's strokes, the boxes'
edges, the objects, the rest)."""
