"""fedaegis subpackage."""
