"""The study on the synthetic world (`emlab reproduce`, `configs/world/*.yaml`)."""
