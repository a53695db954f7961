"""Tasks and grids: loading, invertible augmentations, the token codec, rendering, pretraining sources."""
