"""Jobs: thin orchestrators over the library (backup, restore; later health, drill, prune)."""
