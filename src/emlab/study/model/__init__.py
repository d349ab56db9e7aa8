"""The study on a real chat model (`emlab reproduce` with a `kind: model` config)."""
